"""The gateway's outside-facing TLS: its own server certificate, no client certificate asked.

TLS 1.2+ with ECDHE AEAD suites only (the mesh's policy), the certificate chain and key read
from the files the ``Gateway`` names (the key file must not be readable by others).
"""

from __future__ import annotations

import os
import ssl
import stat
from pathlib import Path

__all__ = ["GatewayTlsError", "public_server_context"]

_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class GatewayTlsError(ValueError):
    pass


def public_server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    try:
        mode = os.stat(key_file).st_mode
    except OSError as exc:
        raise GatewayTlsError(f"cannot read {key_file}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise GatewayTlsError(f"{key_file} is readable by others: chmod 600 it")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise GatewayTlsError(f"cannot load {cert_file} / {key_file}: {exc}") from None
    return ctx
