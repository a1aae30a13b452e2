"""SSL contexts for mesh mTLS: TLS 1.2 minimum (1.3 preferred), ECDHE + AEAD suites only.

Both sides present an X.509-SVID and require one from the peer, verified against the trust
bundle. Host names are not checked: a mesh peer is identified by the SPIFFE ID in its URI SAN,
which :mod:`meshward.tls.peer` checks after the handshake.

Private keys are loaded through an anonymous in-memory file (``memfd``): key material is
never written to disk by the sidecar.
"""

from __future__ import annotations

import os
import ssl

__all__ = ["TLS12_CIPHERS", "client_context", "server_context"]

# TLS 1.2 suites: forward secrecy (ECDHE) and AEAD only. TLS 1.3 suites are all AEAD.
TLS12_CIPHERS = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305"


def _load_chain(ctx: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    fd = os.memfd_create("meshward-svid", os.MFD_CLOEXEC)
    try:
        os.write(fd, chain_pem + b"\n" + key_pem)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _harden(ctx: ssl.SSLContext, chain_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_TICKET
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=bundle_pem.decode("ascii"))
    _load_chain(ctx, chain_pem, key_pem)
    return ctx


def server_context(chain_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> ssl.SSLContext:
    """The inbound side: present our SVID, require and verify the client's."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    return _harden(ctx, chain_pem, key_pem, bundle_pem)


def client_context(chain_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> ssl.SSLContext:
    """The outbound side: present our SVID, verify the server's chain (identity checked after)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    return _harden(ctx, chain_pem, key_pem, bundle_pem)
