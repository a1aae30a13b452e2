"""The peer's SPIFFE identity after a verified handshake: the one extractor for the whole mesh.

OpenSSL has already verified the chain against the trust bundle; what is left is the SPIFFE
part and what OpenSSL does not know about, for sidecars (inbound and outbound) and the control
plane alike:

- exactly one URI SAN, a well-formed ``spiffe://`` ID (full match), in our trust domain;
- the leaf is a leaf: a certificate with ``CA:TRUE`` or ``keyCertSign`` is refused as a peer
  (the X509-SVID spec forbids both in a leaf);
- its serial is not revoked (the revoked serials travel in the config snapshot).

Parsing the DER for the extensions costs a few microseconds; the verdict is cached per
certificate hash (bounded), so a busy listener parses each peer certificate once.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Collection
from dataclasses import dataclass

from cryptography import x509

from meshward.identity.spiffe import InvalidSpiffeId, SpiffeId

__all__ = [
    "PeerIdentity",
    "PeerIdentityError",
    "leaf_problem",
    "peer_identity",
    "peer_serial",
    "peer_spiffe_id",
]

_CACHE_MAX = 4096


class PeerIdentityError(Exception):
    """The peer's certificate chains to our bundle but is not an acceptable X.509-SVID."""


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    spiffe_id: SpiffeId
    cert_sha256: str  # hex SHA-256 of the leaf certificate (DER), as in Envoy's XFCC Hash=
    serial: str  # lower-case hex, no leading zeros (as the ledger and snapshot spell it)

    @property
    def uri(self) -> str:
        return self.spiffe_id.uri


def leaf_problem(cert: x509.Certificate) -> str | None:
    """Why ``cert`` may not be a peer's leaf (CA:TRUE or keyCertSign), or None."""
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "peer leaf certificate is a CA (CA:TRUE)"
    except x509.ExtensionNotFound:
        pass
    try:
        if cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign:
            return "peer leaf certificate may sign certificates (keyCertSign)"
    except x509.ExtensionNotFound:
        pass
    return None


# cert sha256 -> (SpiffeId or the refusal, serial hex)
_verdicts: dict[str, tuple[SpiffeId | str, str]] = {}


def _examine(der: bytes, digest: str) -> tuple[SpiffeId | str, str]:
    cached = _verdicts.get(digest)
    if cached is not None:
        return cached
    verdict: SpiffeId | str
    try:
        cert = x509.load_der_x509_certificate(der)
        serial = format(cert.serial_number, "x")
        problem = leaf_problem(cert)
        if problem is not None:
            verdict = problem
        else:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = san.get_values_for_type(x509.UniformResourceIdentifier)
            if len(uris) != 1:  # the X509-SVID spec: exactly one URI SAN (other SAN types may exist)
                verdict = f"peer certificate must carry exactly one URI SAN, found {len(uris)}"
            else:
                verdict = SpiffeId.from_uri(uris[0])
    except x509.ExtensionNotFound:
        verdict, serial = "peer certificate must carry exactly one URI SAN, found 0", ""
    except InvalidSpiffeId as exc:
        verdict, serial = f"peer certificate identity: {exc}", ""
    except ValueError as exc:
        verdict, serial = f"peer certificate unreadable: {exc}", ""
    if len(_verdicts) >= _CACHE_MAX:
        _verdicts.clear()
    _verdicts[digest] = (verdict, serial)
    return verdict, serial


def peer_identity(
    ssl_object: ssl.SSLObject | ssl.SSLSocket, trust_domain: str, revoked: Collection[str] = ()
) -> PeerIdentity:
    """Extract and check the peer's SPIFFE ID; raise :class:`PeerIdentityError` if unacceptable."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise PeerIdentityError("peer presented no verified certificate")
    digest = hashlib.sha256(der).hexdigest()
    verdict, serial = _examine(der, digest)
    if isinstance(verdict, str):
        raise PeerIdentityError(verdict)
    if verdict.trust_domain != trust_domain:
        raise PeerIdentityError(f"peer trust domain {verdict.trust_domain!r} is not {trust_domain!r}")
    if serial in revoked:
        raise PeerIdentityError(f"peer certificate {serial} ({verdict.uri}) is revoked")
    return PeerIdentity(verdict, digest, serial)


def peer_spiffe_id(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> SpiffeId | None:
    """The verified peer's acceptable SPIFFE ID in any trust domain, or None (no or a bad certificate)."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    verdict, _ = _examine(der, hashlib.sha256(der).hexdigest())
    return verdict if isinstance(verdict, SpiffeId) else None


def peer_serial(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str | None:
    """The verified peer certificate's serial (lower-case hex), or None."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    return _examine(der, hashlib.sha256(der).hexdigest())[1] or None
