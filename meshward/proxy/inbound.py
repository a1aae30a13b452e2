"""The inbound side: the enforcement point in front of the app.

mTLS has already authenticated the caller (the listener refuses anything else in STRICT mode).
For each request: normalize the path (encoded slashes per the mesh's ``pathNormalization``),
clean the header fields (:mod:`meshward.http.hygiene`: Connection-nominated and mesh-owned
fields out, in every spelling, before any filter sees them), build the
:class:`RequestContext`, classify the AI protocol, buffer the body if a filter asks for it
(then classify again, now knowing the JSON ``model``), run the filters, and forward to the app
on loopback exactly the fields the filters saw, plus the caller's identity in
``X-Forwarded-Client-Cert``.
"""

from __future__ import annotations

from functools import lru_cache

from meshward.filters.base import RequestContext
from meshward.http.errors import RemoteProtocolError
from meshward.http.framing import HOP_BY_HOP, connection_tokens
from meshward.http.hygiene import clean_request_headers, websocket_upgrade
from meshward.http.normalize import normalize_path, split_target
from meshward.proxy.classify import classify
from meshward.proxy.exchange import Exchange
from meshward.proxy.forwarded import field_lines

__all__ = ["handle_inbound"]

_HOP = frozenset(h.decode() for h in HOP_BY_HOP) | {
    "x-forwarded-client-cert",
    "content-length",
    "x-forwarded-proto",
}


@lru_cache(maxsize=64)  # "keep-alive", "close", ...: a handful of values in practice
def _not_forwarded(connection: bytes | None) -> frozenset[str]:
    """Fields never copied to the app: hop-by-hop, set by us, or named by ``Connection``."""
    return _HOP | {t.decode("latin-1") for t in connection_tokens(connection)}


async def handle_inbound(ex: Exchange) -> None:
    conn = ex.conn
    sidecar = conn.sidecar
    cfg = sidecar.config
    head = ex.head
    if head.method == "CONNECT":
        ex.fail("connect_method", None)
        return
    _, raw_path, query = split_target(head.target) if head.target != "*" else (None, "*", "")
    slashes = cfg.snapshot.mesh.path_normalization.encoded_slashes
    path = normalize_path(raw_path, slashes) if raw_path != "*" else raw_path
    headers = clean_request_headers(head.headers, head.connection)
    if head.upgrade and not websocket_upgrade(headers.get("upgrade")):
        raise RemoteProtocolError("only WebSocket upgrades are supported")
    app = sidecar.options.app
    ctx = RequestContext(
        request_id=ex.request_id,
        direction="inbound",
        peer=conn.peer,
        method=head.method,
        path=path,
        query=query,
        host=headers.get("host", ""),
        headers=headers,
        destination_port=app[1] if app else 0,
        start=ex.start,
    )
    ctx.ai = classify(head.method, path, headers, None)
    ex.ctx = ctx
    chain = cfg.chain
    ex.chain = chain
    if chain.body and head.has_body and any(f.wants_request_body(ctx) for f in chain.body):
        ctx.body = await ex.read_body(sidecar.options.max_buffered_body)
        ctx.ai = classify(head.method, path, headers, ctx.body)
    for f in chain.requests:
        denial = await f.on_request(ctx)
        if denial is not None:
            ex.deny(denial)
            return
    if ex.finished:
        return
    if sidecar.app_target is None:
        ex.fail("no_app", None)
        return
    body = ctx.body if ctx.body_rewritten else None
    skip = _not_forwarded(head.connection)
    target = f"{path}?{ctx.query}" if ctx.query else path
    lines = [f"{head.method} {target} HTTP/1.1\r\n", *field_lines(ex, ctx, skip, body)]
    ident = conn.peer_identity
    if ident is not None:
        lines.append("x-forwarded-proto: https\r\n")
        lines.append(f"x-forwarded-client-cert: {sidecar.xfcc(ident)}\r\n")
    else:
        lines.append("x-forwarded-proto: http\r\n")
    if head.upgrade:
        lines.append("connection: upgrade\r\n")
        lines.append(f"upgrade: {headers['upgrade']}\r\n")
    lines.append("\r\n")
    text = "".join(lines)
    n = len(lines)
    if text.count("\n") != n or text.count("\r") != n or "\x00" in text:
        # a filter put CR, LF or NUL into a header: drop such headers rather than split the head
        text = "".join(
            line for line in lines if line.count("\n") == line.count("\r") == 1 and "\x00" not in line
        )
    await ex.forward(sidecar.app_target, text.encode("latin-1"), body)
