"""TLS for the control plane's API: the server context, client contexts, and peer SPIFFE IDs.

The control plane presents an X.509-SVID for ``spiffe://TD/ns/meshward-system/sa/control``;
clients (sidecars, the CLI) verify it against the trust bundle and check that exact SPIFFE ID
(there is no DNS name to check: hostname verification is replaced by the SPIFFE ID check).
Clients present their own SVID; the server asks for one but does not require it at the TLS layer
because a joining sidecar has none yet (it brings a join token to the CSR endpoint instead);
every other endpoint refuses a caller without one.
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path
from typing import Any

from meshward.identity.spiffe import InvalidSpiffeId, SpiffeId

__all__ = [
    "CONTROL_NAMESPACE",
    "CONTROL_SERVICE_ACCOUNT",
    "bundle_digest",
    "client_context",
    "control_id",
    "peer_serial",
    "peer_spiffe_id",
    "server_context",
]

CONTROL_NAMESPACE = "meshward-system"
CONTROL_SERVICE_ACCOUNT = "control"


def control_id(trust_domain: str) -> SpiffeId:
    return SpiffeId(trust_domain, CONTROL_NAMESPACE, CONTROL_SERVICE_ACCOUNT)


def bundle_digest(bundle_pem: bytes) -> str:
    """Names one trust bundle: a sidecar's watch carries it, a changed bundle is pushed."""
    return hashlib.sha256(bundle_pem).hexdigest()[:32]


def _base(purpose: ssl.Purpose) -> ssl.SSLContext:
    ctx = ssl.create_default_context(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    return ctx


def server_context(cert: Path, key: Path, bundle: Path) -> ssl.SSLContext:
    """Server side: our SVID, optional client certificates verified against the bundle.

    Built anew when the bundle changes (never reloaded in place: loading verify locations into a
    context only adds roots, so a root whose overlap ended would stay trusted)."""
    ctx = _base(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=str(bundle))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(bundle_pem: bytes, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """Client side: verify the server against ``bundle_pem``; present ``cert``/``key`` if given."""
    ctx = _base(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = False  # replaced by the SPIFFE ID check (see peer_spiffe_id)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=bundle_pem.decode("ascii"))
    if cert is not None and key is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def _uri_sans(peercert: dict[str, Any] | None) -> list[str]:
    if not peercert:
        return []
    return [value for kind, value in peercert.get("subjectAltName", ()) if kind == "URI"]


def peer_spiffe_id(sock: ssl.SSLSocket | ssl.SSLObject) -> SpiffeId | None:
    """The verified peer's one SPIFFE ID, or None if it presented no (valid SPIFFE) certificate."""
    uris = _uri_sans(sock.getpeercert())
    if len(uris) != 1:
        return None
    try:
        return SpiffeId.from_uri(uris[0])
    except InvalidSpiffeId:
        return None


def peer_serial(sock: ssl.SSLSocket | ssl.SSLObject) -> str | None:
    cert = sock.getpeercert()
    serial = cert.get("serialNumber") if cert else None
    return str(serial).lower() if serial else None
