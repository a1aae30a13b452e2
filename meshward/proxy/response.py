"""The response half of an exchange: what the upstream answers, on its way to the client.

These run in the upstream protocol's callbacks, chunk by chunk (nothing is buffered whole):
the head goes through the filters' ``on_response_headers`` (in reverse chain order) and is
re-framed (chunked when a filter may rewrite the body or the length is unknown); each chunk
goes through ``on_response_chunk``; a :class:`~meshward.filters.base.StreamAbort` writes its
tail and ends the stream cleanly. A :class:`~meshward.filters.base.ResponseDenied` answers the
denial instead while no response byte has been sent: the head is held back while a rewriting
filter holds the body back (a buffered JSON document), so it can be refused whole. A 101 answer to an Upgrade turns the exchange into a tunnel.
They are methods of :class:`~meshward.proxy.exchange.Exchange`, kept here to keep modules small.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from meshward.filters.base import ResponseDenied, StreamAbort
from meshward.http.framing import CHUNK_END, HOP_BY_HOP, chunk, clean_fields, connection_tokens, response_head
from meshward.http.parser import ResponseHead

if TYPE_CHECKING:
    from meshward.proxy.exchange import Exchange

__all__ = [
    "CONTINUE",
    "MODE_CHUNKED",
    "MODE_CLOSE",
    "MODE_NONE",
    "MODE_RAW",
    "on_response_data",
    "on_response_end",
    "on_response_head",
    "on_upstream_closed",
    "on_upstream_error",
    "on_upstream_raw",
    "start_tunnel",
    "stream_abort",
]

# Response body framing toward the client.
MODE_NONE, MODE_RAW, MODE_CHUNKED, MODE_CLOSE = 0, 1, 2, 3
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@lru_cache(maxsize=64)  # "keep-alive", "close", ...: a handful of values in practice
def _dropped_fields(connection: bytes | None) -> frozenset[bytes]:
    """Hop-by-hop fields plus those a Connection header names."""
    return HOP_BY_HOP | connection_tokens(connection)


def on_response_head(self: Exchange, rh: ResponseHead) -> None:
    self.activity += 1
    status = rh.status
    if status < 200:
        self.informational = True
        if status == 101 and self.head.upgrade:
            self.start_tunnel(rh)
        elif status == 100 and self.head.expect_continue and not self.continue_sent:
            self.continue_sent = True
            self.conn.write(CONTINUE)
        return
    if self.observer is not None and self.observer.on_head(self, rh):
        return  # dropped: the request is retried on another endpoint
    self.status = status
    self.resp_keep_alive_up = rh.keep_alive
    ctx = self.ctx
    if ctx is not None:
        ctx.response_status = status
        ctx.upstream_duration = self.loop.time() - self.forwarded_at
    drop = _dropped_fields(rh.connection)
    no_body = self.head.method == "HEAD" or status in (204, 304)
    rewrite = False
    chain = self.chain
    if chain is not None and ctx is not None and chain.headers:
        str_headers = [
            (n.decode("latin-1"), v.decode("latin-1")) for n, v in rh.headers if n.lower() not in drop
        ]
        try:
            for f in chain.headers:
                if f.on_response_headers(ctx, status, str_headers):
                    rewrite = True
        except ResponseDenied as refused:
            self.deny(refused.denial)  # nothing was sent: the upstream response is dropped
            return
        # a body the filters may rewrite is re-framed below: its old length goes
        strip_length = rewrite and not no_body
        headers = clean_fields(
            [
                (n.encode("latin-1"), v.encode("latin-1"))
                for n, v in str_headers
                if not (strip_length and n.lower() == "content-length")
            ]
        )
    else:
        headers = [(n, v) for n, v in rh.headers if n.lower() not in drop]
    self.resp_started = True
    if no_body:
        self.resp_mode = MODE_NONE
    elif rewrite or rh.content_length is None:
        if self.head.version == "1.1":
            self.resp_mode = MODE_CHUNKED
            headers.append((b"transfer-encoding", b"chunked"))
        else:
            self.resp_mode = MODE_CLOSE
            self.keep_alive = False
    else:
        self.resp_mode = MODE_RAW
    if not self.keep_alive or self.conn.closing:
        self.keep_alive = False
        headers.append((b"connection", b"close"))
    elif self.head.version == "1.0":
        headers.append((b"connection", b"keep-alive"))
    data = response_head(status, rh.reason or None, headers)
    if rewrite and not no_body:
        # Held until the filters release a body byte (or the body ends): while they hold the
        # whole body back, a ResponseDenied can still turn this response into a local answer.
        self.head_pending = data
    else:
        self.conn.write(data)


def on_response_data(self: Exchange, data: bytes) -> None:
    self.activity += 1
    if self.informational:
        return
    chain = self.chain
    if chain is not None and chain.chunk and self.ctx is not None:
        ctx = self.ctx
        try:
            for f in chain.chunk:
                data = f.on_response_chunk(ctx, data)
        except StreamAbort as abort:
            self.stream_abort(abort)
            return
    if data:
        if self.observer is not None:
            self.observer.on_data(data)
        self.bytes_out += len(data)
        head = self.head_pending
        if head is not None:
            self.head_pending = None
            self.conn.write(head)
        self.conn.write(chunk(data) if self.resp_mode == MODE_CHUNKED else data)


def on_response_end(self: Exchange) -> None:
    if self.informational:
        self.informational = False
        return
    if self.resp_done:
        return
    tail = b""
    chain = self.chain
    if chain is not None and chain.chunk and self.ctx is not None:
        ctx = self.ctx
        try:
            for f in chain.chunk:
                if tail:
                    tail = f.on_response_chunk(ctx, tail)
                tail += f.on_response_end(ctx)
        except StreamAbort as abort:
            if self.head_pending is not None and isinstance(abort, ResponseDenied):
                # the whole response was read: its upstream connection may serve again
                self._release_upstream(self.resp_keep_alive_up and self.req_done)
            self.stream_abort(abort)
            return
    mode = self.resp_mode
    head = self.head_pending
    if head is not None:
        self.head_pending = None
        self.conn.write(head)
    if tail:
        self.bytes_out += len(tail)
        self.conn.write(chunk(tail) if mode == MODE_CHUNKED else tail)
    if mode == MODE_CHUNKED:
        self.conn.write(CHUNK_END)
    self.resp_done = True
    self._release_upstream(self.resp_keep_alive_up and self.req_done)
    if not self.req_done:
        self.keep_alive = False  # the app answered before the body ended: start afresh
    self.finish()


def stream_abort(self: Exchange, abort: StreamAbort) -> None:
    """A response filter cut the stream: write its tail, end cleanly, drop the upstream.

    A :class:`ResponseDenied` before any response byte left is answered as its denial instead.
    """
    if self.head_pending is not None:
        if isinstance(abort, ResponseDenied):
            self.deny(abort.denial)
            return
        self.conn.write(self.head_pending)
        self.head_pending = None
    if self.ctx is not None:
        self.ctx.scratch["stream_abort"] = abort.reason
    if abort.tail:
        self.bytes_out += len(abort.tail)
        self.conn.write(chunk(abort.tail) if self.resp_mode == MODE_CHUNKED else abort.tail)
    if self.resp_mode == MODE_CHUNKED:
        self.conn.write(CHUNK_END)
    else:
        self.keep_alive = False  # a Content-Length body cannot end early: close instead
    self.resp_done = True
    self._release_upstream(False)
    if not self.req_done:
        self.keep_alive = False
    self.finish()


def on_upstream_error(self: Exchange, name: str, detail: str | None) -> None:
    """The upstream failed (reset, TLS alert, bad response, timeout)."""
    up = self.upstream
    self._release_upstream(False)
    if self.finished:
        return
    replay = self.replay
    if name == "upstream_reset" and replay is not None and up is not None and not self.resp_started:
        self.replay = None
        self.retried = True
        self.task = self.loop.create_task(self._replay(up.target, replay))
        return
    if self.observer is not None and not self.resp_started and self.observer.on_error(self, name):
        return  # retried on another endpoint
    if self.tunnel:
        self.finish()
        self.conn.close()
    elif not self.resp_started or self.head_pending is not None:
        self.fail(name, detail)  # nothing of the response was sent yet: a clean 502/504
    else:
        self.flag = {"upstream_timeout": "UT", "upstream_protocol": "UPE"}.get(name, "UC")
        self.keep_alive = False
        self.finish()
        self.conn.close()  # mid-body: the client must see a truncated response


# ---- upgrade (WebSocket) tunnel ----------------------------------------------------------------


def start_tunnel(self: Exchange, rh: ResponseHead) -> None:
    """A 101 to the Upgrade asked for (exactly ``websocket``) becomes a tunnel; any other is a 502."""
    if not any(n.lower() == b"upgrade" and v.strip().lower() == b"websocket" for n, v in rh.headers):
        self.on_upstream_error("upstream_protocol", "101 answer does not switch to the protocol asked for")
        return
    self.tunnel = True
    self.status = 101
    self.resp_started = True
    if self.ctx is not None:
        self.ctx.response_status = 101
    headers = [(n, v) for n, v in rh.headers if n.lower() not in (b"keep-alive", b"transfer-encoding")]
    self.conn.write(response_head(101, rh.reason or None, headers))
    self.conn.tunnel = True
    up = self.upstream
    if up is not None and self.raw_buf:
        up.write(b"".join(self.raw_buf))
    self.raw_buf = None


def on_upstream_raw(self: Exchange, data: bytes) -> None:
    self.activity += 1
    if data:
        self.bytes_out += len(data)
        self.conn.write(data)


def on_upstream_closed(self: Exchange) -> None:
    self.upstream = None
    self.keep_alive = False
    self.finish()
    self.conn.close()
