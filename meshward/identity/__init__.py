"""Mesh identity: SPIFFE IDs, the certificate authority, join tokens and X.509-SVIDs.

- ``spiffe``     SPIFFE IDs and their three accepted spellings.
- ``keys``       private keys and CSRs, made where they are used; key files 0600.
- ``authority``  the CA core: roots, intermediates, CSR checks, X.509-SVID signing.
- ``state``      the state directory layout (``MeshState``): CA files, operator SVID, SQLite.
- ``bootstrap``  ``meshward init``: a fresh CA or the operator's own root / intermediate.
- ``rotation``   ``meshward ca rotate`` and the trust bundle with its overlap.
- ``tokens``     join tokens (hashed, single use by default, consumed atomically).
- ``ledger``     the record of every issued SVID and every refusal.
- ``issuance``   ``IdentityService``: issue by CSR + token, renew, mint, expiry warnings.

Operator documentation: ``docs/identity.md``.
"""
