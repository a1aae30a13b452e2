"""The control plane's identity on the wire: its SPIFFE ID and the bundle digest sidecars watch.

The control plane presents an X.509-SVID for ``spiffe://TD/ns/meshward-system/sa/control``;
clients (sidecars, the CLI) verify it against the trust bundle only (contexts from
:mod:`meshward.tls.contexts`) and check that exact SPIFFE ID (there is no DNS name to check:
hostname verification is replaced by the SPIFFE ID check). The ``meshward-system`` namespace is
reserved: the authority never issues an identity in it to a workload.
"""

from __future__ import annotations

import hashlib

from meshward.identity.spiffe import SYSTEM_NAMESPACE, SpiffeId

__all__ = ["CONTROL_NAMESPACE", "CONTROL_SERVICE_ACCOUNT", "bundle_digest", "control_id"]

CONTROL_NAMESPACE = SYSTEM_NAMESPACE
CONTROL_SERVICE_ACCOUNT = "control"


def control_id(trust_domain: str) -> SpiffeId:
    return SpiffeId(trust_domain, CONTROL_NAMESPACE, CONTROL_SERVICE_ACCOUNT)


def bundle_digest(bundle_pem: bytes) -> str:
    """Names one trust bundle: a sidecar's watch carries it, a changed bundle is pushed."""
    return hashlib.sha256(bundle_pem).hexdigest()[:32]
