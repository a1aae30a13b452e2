"""The one TLS context builder of the mesh: sidecars and the control plane, both sides.

One policy everywhere: TLS 1.2 minimum (1.3 preferred), ECDHE + AEAD suites only, no
compression, renegotiation or session tickets, and trust in the mesh bundle ONLY — a context
is made with ``ssl.SSLContext`` (never ``create_default_context``), so no system CA store is
ever loaded: a publicly trusted CA cannot vouch for a mesh peer or the control plane.

Host names are not checked: a mesh peer is identified by the SPIFFE ID in its URI SAN, which
:mod:`meshward.tls.peer` checks after the handshake.

Private keys given as bytes are loaded through an anonymous in-memory file (``memfd``): key
material is never written to disk by the sidecar.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

__all__ = [
    "TLS12_CIPHERS",
    "client_context",
    "client_context_files",
    "server_context",
    "server_context_files",
]

# TLS 1.2 suites: forward secrecy (ECDHE) and AEAD only. TLS 1.3 suites are all AEAD.
TLS12_CIPHERS = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305"


def _load_chain(ctx: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    fd = os.memfd_create("meshward-svid", os.MFD_CLOEXEC)
    try:
        os.write(fd, chain_pem + b"\n" + key_pem)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _policy(ctx: ssl.SSLContext, bundle_pem: bytes, verify: ssl.VerifyMode) -> ssl.SSLContext:
    """The mesh's one policy applied to a bare context; trusts ``bundle_pem`` and nothing else."""
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_TICKET
    ctx.verify_mode = verify
    ctx.load_verify_locations(cadata=bundle_pem.decode("ascii"))
    return ctx


def _server(bundle_pem: bytes, require_client_cert: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    # No TLS 1.3 tickets at all: with OP_NO_TICKET they would be stateful, one server-side
    # cache entry per connection (a certificate each) that nothing resumes — memory that grows
    # with every new connection until the cache's 20,480 entries are full.
    ctx.num_tickets = 0
    return _policy(ctx, bundle_pem, ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL)


def _client(bundle_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # replaced by the SPIFFE ID check (meshward.tls.peer)
    return _policy(ctx, bundle_pem, ssl.CERT_REQUIRED)


def server_context(
    chain_pem: bytes, key_pem: bytes, bundle_pem: bytes, *, require_client_cert: bool = True
) -> ssl.SSLContext:
    """The serving side: present our SVID, verify the client's against the bundle.

    ``require_client_cert=False`` is for the control plane only: a joining sidecar has no SVID
    yet (it brings a join token to the CSR endpoint); every other endpoint refuses it."""
    ctx = _server(bundle_pem, require_client_cert)
    _load_chain(ctx, chain_pem, key_pem)
    return ctx


def client_context(chain_pem: bytes | None, key_pem: bytes | None, bundle_pem: bytes) -> ssl.SSLContext:
    """The connecting side: present our SVID (if any), verify the server's chain (identity after)."""
    ctx = _client(bundle_pem)
    if chain_pem is not None and key_pem is not None:
        _load_chain(ctx, chain_pem, key_pem)
    return ctx


def server_context_files(
    cert: Path, key: Path, bundle: Path, *, require_client_cert: bool = True
) -> ssl.SSLContext:
    """:func:`server_context` from PEM files (the control plane's own SVID directory)."""
    ctx = _server(bundle.read_bytes(), require_client_cert)
    ctx.load_cert_chain(cert, key)
    return ctx


def client_context_files(
    bundle_pem: bytes, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """:func:`client_context` with the certificate and key in files (the CLI, a sidecar's cache)."""
    ctx = _client(bundle_pem)
    if cert is not None and key is not None:
        ctx.load_cert_chain(cert, key)
    return ctx
