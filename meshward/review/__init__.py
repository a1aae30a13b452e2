"""Security reviews and architecture discovery from what the mesh recorded.

- ``data``        the plain input (:class:`MeshData`: config, observed requests, certificates).
- ``sources``     adapters filling it from a state directory (config store, audit trail, ledger).
- ``topology``    services, their identities and the policies selecting them.
- ``inventory``   ``meshward discover``: services, callers, models, exposure and findings.
- ``access``      ``meshward review``: rule use, unused grants, broad and shadowed rules, stale
                  identities, denials, dry-run denials, expiry, compliance.
- ``coverage``    does one authorization rule match everything another matches.
- ``suggest``     least-privilege AuthorizationPolicy from observed traffic.
- ``evaluate``    replaying observed requests through the authz engine.
- ``compliance``  controls in force mapped to OWASP LLM Top 10, EU AI Act, NIST AI RMF.
- ``render``      table, Markdown and HTML; ``signing`` the checkpoint-key signature;
  ``export`` findings to the SIEM sinks (the command-line glue is :mod:`meshward.cli.reporting`).

Analysis modules are pure: plain data in, a JSON-ready document out, everything sorted.
"""
