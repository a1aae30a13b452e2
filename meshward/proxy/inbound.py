"""The inbound side: the enforcement point in front of the app.

mTLS has already authenticated the caller (the listener refuses anything else in STRICT mode).
For each request: :func:`~meshward.proxy.prepare.prepare_request` (shared with ``meshward
check``) normalizes the path (encoded slashes per the mesh's ``pathNormalization``), cleans the
header fields (:mod:`meshward.http.hygiene`: Connection-nominated and mesh-owned fields out, in
every spelling, before any filter sees them), builds the :class:`RequestContext` and classifies
the AI protocol; then the body is buffered if a filter asks for it (and classified again, now
knowing the JSON ``model``), the filters run, and exactly the fields the filters saw are
forwarded to the app on loopback, plus the caller's identity in ``X-Forwarded-Client-Cert``.
"""

from __future__ import annotations

from functools import lru_cache

from meshward.ai.protocol import classify
from meshward.http.framing import HOP_BY_HOP, connection_tokens
from meshward.proxy.exchange import Exchange
from meshward.proxy.forwarded import field_lines
from meshward.proxy.prepare import prepare_request

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
    app = sidecar.options.app
    ctx = prepare_request(
        head,
        cfg.snapshot.mesh.path_normalization.encoded_slashes,
        request_id=ex.request_id,
        peer=conn.peer,
        destination_port=app[1] if app else 0,
        start=ex.start,
    )
    path = ctx.path
    headers = ctx.headers
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
