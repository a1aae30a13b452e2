"""The outbound side: the app's HTTP proxy into the mesh.

Apps send plain HTTP with ``HTTP_PROXY`` set: absolute-form targets
(``GET http://fraud-model.ml/v2/... HTTP/1.1``), or origin-form with a ``Host`` header. The
authority is resolved to a mesh service (:mod:`meshward.proxy.routes`); the request goes to one
of its serving sidecars over mTLS with our own SVID, and only if the server proves one of the
SPIFFE IDs the service entry allows (else 502, flag ``UIM``). Other hosts and ``CONNECT`` go to
:mod:`meshward.proxy.egress` (ExternalServices; REGISTRY_ONLY: 403 for undeclared hosts); in
ALLOW_ANY mode undeclared hosts pass through plainly.

Transparent redirection (Istio's port 15001, later): connections redirected by iptables keep
their original destination, readable with ``getsockopt(SOL_IP, SO_ORIGINAL_DST)`` in
``connection_made``. A transparent listener would resolve that address (or the ``Host`` of an
origin-form request) through the same :class:`~meshward.proxy.routes.RouteTable` — resolution
takes an authority string, not a parsed absolute URL, so only the listener changes.
"""

from __future__ import annotations

import socket
import struct
from functools import lru_cache

from meshward.http.errors import RemoteProtocolError
from meshward.http.framing import HOP_BY_HOP, connection_tokens
from meshward.http.normalize import split_target
from meshward.proxy.egress import handle_connect, handle_external
from meshward.proxy.exchange import Exchange
from meshward.proxy.forward import forward_to_service
from meshward.proxy.forwarded import framing
from meshward.proxy.routes import split_authority
from meshward.proxy.upstream import UpstreamTarget

__all__ = ["handle_outbound", "original_destination"]

_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h


def original_destination(transport: object) -> tuple[str, int] | None:
    """Where a connection redirected by iptables (REDIRECT) was going, or None (not redirected,
    or not IPv4). Read only when the Host names no mesh service: nothing on the hot path."""
    get_extra = getattr(transport, "get_extra_info", None)
    sock = get_extra("socket") if get_extra is not None else None
    if sock is None or sock.family != socket.AF_INET:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_IP, _SO_ORIGINAL_DST, 16)
    except OSError:
        return None
    port = struct.unpack_from("!H", raw, 2)[0]
    address = socket.inet_ntoa(raw[4:8])
    local = sock.getsockname()
    if (address, port) == (local[0], local[1]):
        return None  # not redirected: the original destination is this listener
    return address, port


_DROP = HOP_BY_HOP | {b"host", b"x-forwarded-client-cert", b"content-length"}


@lru_cache(maxsize=64)  # "keep-alive", "close", ...: a handful of values in practice
def _not_forwarded(connection: bytes | None) -> frozenset[bytes]:
    """Fields never copied across: hop-by-hop, set by us, or named by ``Connection``."""
    return _DROP | connection_tokens(connection)


async def handle_outbound(ex: Exchange) -> None:
    sidecar = ex.conn.sidecar
    cfg = sidecar.config
    head = ex.head
    if head.method == "CONNECT":
        if cfg.egress is None:
            ex.fail("connect_method", None)
            return
        await handle_connect(ex, cfg.egress, cfg.routes, cfg.allow_any_outbound)
        return
    authority, path, query = split_target(head.target) if head.target != "*" else (None, "*", "")
    authority = authority or head.host
    if not authority:
        raise RemoteProtocolError("no destination: send an absolute URL (HTTP_PROXY) or a Host header")
    try:
        host, port = split_authority(authority)
    except ValueError as exc:
        raise RemoteProtocolError(str(exc)) from None
    route = cfg.routes.resolve(host)
    if route is None and (original := original_destination(ex.conn.transport)) is not None:
        route = cfg.routes.resolve(original[0])  # transparently redirected: where the app dialled
    if route is None and cfg.egress is not None and (cfg.egress.handles(host) or not cfg.allow_any_outbound):
        await handle_external(ex, cfg.egress, host, port, path, query)  # ExternalService or 403
        return
    if route is None and not cfg.allow_any_outbound:
        ex.fail("no_route", host)
        return
    # The head is built once from the parsed fields; the framing goes last, once the body is
    # known (forward_to_service may buffer it: then a Content-Length of what was read).
    drop = _not_forwarded(head.connection)
    target = f"{path}?{query}" if query else path
    lines = [f"{head.method} {target} HTTP/1.1\r\nhost: {authority}".encode()]
    upgrade = b""
    for name, value in head.headers:
        low = name.lower()
        if low in drop:
            if low == b"upgrade":
                upgrade = value
            continue
        lines.append(name + b": " + value)
    if head.request_id is None:  # the parser's scan found no X-Request-Id
        lines.append(b"x-request-id: " + ex.request_id.encode())
    if head.upgrade:
        lines.append(b"connection: upgrade\r\nupgrade: " + upgrade)
    lines.append(b"")
    fields = b"\r\n".join(lines)
    if route is None:
        await ex.forward(UpstreamTarget(host, port or 80), fields + framing(ex, None))
        return
    if not route.targets:
        ex.fail("no_endpoints", route.entry.host)
        return
    # subsets, balancing, ejection, retries, mirroring: meshward.rollout
    await forward_to_service(ex, route, fields, target)
