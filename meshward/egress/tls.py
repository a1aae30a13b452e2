"""TLS origination to external services: verify the chain and the host name, always.

The context trusts the ExternalService's ``caBundle`` (a PEM file) or, without one, the system
trust store; ``check_hostname`` is on, so a server whose certificate does not name the host the
app called is refused during the handshake (the caller gets 502 ``upstream TLS handshake
failed``). Contexts are cached per bundle path and reloaded when the file changes.
"""

from __future__ import annotations

import os
import ssl

__all__ = ["origination_context"]

_cache: dict[str | None, tuple[float, ssl.SSLContext]] = {}


def origination_context(ca_bundle: str | None) -> ssl.SSLContext:
    """A client context for HTTPS to the outside (raises OSError/SSLError if the bundle is bad)."""
    stamp = os.stat(ca_bundle).st_mtime if ca_bundle else 0.0
    cached = _cache.get(ca_bundle)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_bundle)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["http/1.1"])
    if len(_cache) > 64:
        _cache.clear()
    _cache[ca_bundle] = (stamp, ctx)
    return ctx
