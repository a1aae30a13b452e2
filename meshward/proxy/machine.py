"""The sans-IO exchange: one request and its response, driven by events, acting through ports.

Events in (methods, all synchronous): :meth:`~ExchangeMachine.request_data`, ``request_end``,
``request_raw`` from the client; :meth:`~ExchangeMachine.attach` (the request left for an
upstream), ``response_head``, ``response_data``, ``response_end``, ``upstream_raw``,
``upstream_error``, ``upstream_closed`` from the upstream; ``timeout(now, idle_for)`` from the
sweeper; ``lost`` when the client went away; ``deny`` / ``fail`` when the request side answers
locally. Actions out: writes, pause / resume of the client, close and release go to the
:class:`~meshward.proxy.states.ClientPort` and the :class:`~meshward.proxy.states.UpstreamPort`;
:meth:`finish` runs exactly once and calls every filter's ``on_complete`` whatever happened.

The response side runs chunk by chunk, nothing buffered whole: the head goes through the
filters' ``on_response_headers`` (in reverse chain order) and is re-framed (chunked when a
filter may rewrite the body or the length is unknown); each chunk goes through
``on_response_chunk``; a :class:`~meshward.filters.base.StreamAbort` writes its tail and ends
the stream cleanly. A :class:`~meshward.filters.base.ResponseDenied` answers the denial instead
while no response byte was sent: the head is held (:attr:`Resp.HELD`) while a rewriting filter
holds the body back, so it can still be refused whole. A 101 to an Upgrade becomes a tunnel.

The request side's coroutine (filters may await) lives in :mod:`meshward.proxy.exchange`; it
reaches this machine through the same methods, and three hooks it overrides
(:meth:`~ExchangeMachine.body_ready`, :meth:`~ExchangeMachine.replay_on`,
:meth:`~ExchangeMachine.stop_handler`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Final

from meshward.filters.base import Denial, RequestContext, ResponseDenied, StreamAbort
from meshward.http.errors import BodyTooLarge, RemoteProtocolError
from meshward.http.framing import (
    CHUNK_END,
    HOP_BY_HOP,
    STATUS_REASONS,
    chunk,
    clean_fields,
    connection_tokens,
    response_head,
)
from meshward.http.parser import RequestHead, ResponseHead
from meshward.proxy.hooks import CompiledChain
from meshward.proxy.options import SidecarOptions
from meshward.proxy.responses import LocalReply, denial_reply, failure_reply, render
from meshward.proxy.states import (
    REQ_DISCARDING,
    REQ_DONE,
    REQ_RECEIVING,
    REQ_STREAMING,
    REQUEST_BITS,
    RESP_BODY,
    RESP_DONE,
    RESP_HELD,
    RESP_INTERIM,
    RESP_TUNNEL,
    RESP_WAITING,
    RESPONSE_BITS,
    ClientPort,
    LocalProtocolError,
    Observer,
    Req,
    Resp,
    UpstreamPort,
)

if TYPE_CHECKING:
    from meshward.proxy.upstream import UpstreamTarget

__all__ = ["CONTINUE", "MODE_CHUNKED", "MODE_CLOSE", "MODE_NONE", "MODE_RAW", "ExchangeMachine"]

log = logging.getLogger("meshward.proxy")

# Response body framing toward the client.
MODE_NONE: Final = 0
MODE_RAW: Final = 1
MODE_CHUNKED: Final = 2
MODE_CLOSE: Final = 3
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"

BUFFER_HIGH: Final = 256 * 1024  # request bytes held while connecting before the client is paused
DISCARD_MAX: Final = 64 * 1024  # after a local answer, read and drop at most this much body
# Methods a proxy may send twice (RFC 9110 §9.2.2): a POST the app may already have acted on
# (a charge, a tool call, a fine-tuning job) is never replayed, whatever the failure looked like.
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_MID_BODY_FLAGS: Final = {"upstream_timeout": "UT", "upstream_protocol": "UPE"}
_NOT_SENT: Final = frozenset({RESP_WAITING, RESP_INTERIM, RESP_HELD})


def status_line(status: int, reason: bytes) -> bytes:
    """``HTTP/1.1 <status> <reason>`` (the upstream's reason, else the standard one)."""
    return b"HTTP/1.1 %d %s" % (status, reason or STATUS_REASONS.get(status, b"Unknown"))


@lru_cache(maxsize=64)  # "keep-alive", "close", ...: a handful of values in practice
def _dropped_fields(connection: bytes | None) -> frozenset[bytes]:
    """Hop-by-hop fields plus those a Connection header names."""
    return HOP_BY_HOP | connection_tokens(connection)


class ExchangeMachine:
    """One request/response exchange on a client connection, as two state machines."""

    __slots__ = (
        "activity",
        "body_limit",
        "bytes_in",
        "bytes_out",
        "chain",
        "client",
        "clock",
        "continue_sent",
        "ctx",
        "finished",
        "flag",
        "forwarded_at",
        "head",
        "head_pending",
        "keep_alive",
        "mode",
        "observer",
        "options",
        "raw_buf",
        "replay",
        "req",
        "req_buf",
        "req_buf_size",
        "request_id",
        "resp",
        "retried",
        "start",
        "status",
        "up_chunked",
        "up_keep_alive",
        "upstream",
    )

    def __init__(
        self,
        client: ClientPort,
        head: RequestHead,
        request_id: str,
        clock: Callable[[], float],
        options: SidecarOptions,
    ) -> None:
        self.client = client
        self.head = head
        self.request_id = request_id
        self.clock = clock
        self.options = options
        self.start = clock()
        self.req = REQ_RECEIVING
        self.resp = RESP_WAITING
        self.finished = False
        self.ctx: RequestContext | None = None
        self.chain: CompiledChain | None = None
        # request side
        self.req_buf: list[bytes] = []
        self.req_buf_size = 0
        self.body_limit = -1  # >= 0 while the request side waits for the whole body
        self.continue_sent = False
        self.raw_buf: list[bytes] | None = None  # upgrade: client bytes before the 101
        # upstream side
        self.upstream: UpstreamPort | None = None
        self.up_chunked = False  # the forwarded request body is chunked
        self.forwarded_at = 0.0
        self.replay: bytes | None = None  # the whole request, while it may be sent again
        self.retried = False
        # response side
        self.head_pending = b""  # the response head while HELD
        self.mode = MODE_NONE
        self.up_keep_alive = False
        self.keep_alive = head.keep_alive and not head.upgrade
        self.status = 0
        self.flag = "-"
        self.bytes_in = 0
        self.bytes_out = 0
        self.activity = 0
        # a meshward.proxy.forward.Attempt when a service plan serves this request (outbound):
        # sees the answer's status first (retries), its body (mirror compare), the outcome
        self.observer: Observer | None = None

    # ---- the transition tables ------------------------------------------------------------------
    def _req_to(self, new: Req) -> None:
        if not REQUEST_BITS[self.req] >> new & 1:
            raise LocalProtocolError(f"request cannot go from {self.req.name} to {new.name}")
        self.req = new

    def _resp_to(self, new: Resp) -> None:
        if not RESPONSE_BITS[self.resp] >> new & 1:
            raise LocalProtocolError(f"response cannot go from {self.resp.name} to {new.name}")
        self.resp = new

    @property
    def req_done(self) -> bool:
        return self.req is REQ_DONE

    @property
    def resp_started(self) -> bool:
        """Whether an answer (the upstream's or a local one) is under way or over."""
        resp = self.resp
        return resp is not RESP_WAITING and resp is not RESP_INTERIM

    @property
    def tunnel(self) -> bool:
        return self.resp is RESP_TUNNEL

    # ---- hooks the request side's coroutine overrides (meshward.proxy.exchange) ---------------
    def body_ready(self, error: BodyTooLarge | None) -> None:
        """The whole body is in (or it grew past ``body_limit``): wake whoever waits for it."""

    def replay_on(self, target: UpstreamTarget, data: bytes) -> None:
        """Send the whole request again on a fresh connection (the keep-alive race)."""
        self.fail("upstream_reset", "")

    def stop_handler(self) -> None:
        """The exchange finished: stop the request side's coroutine if it still waits."""

    # ---- events from the client -----------------------------------------------------------------
    def request_data(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.activity += 1
        req = self.req
        if req is REQ_STREAMING:
            up = self.upstream
            if up is not None:
                up.write(chunk(data) if self.up_chunked else data)
            return
        if req is REQ_DISCARDING:
            if self.bytes_in > DISCARD_MAX:
                self.keep_alive = False
                self.client.close()
            return
        self.req_buf.append(data)
        self.req_buf_size += len(data)
        if self.body_limit >= 0:
            if self.req_buf_size > self.body_limit:
                self.body_ready(BodyTooLarge(f"request body larger than {self.body_limit} bytes"))
        elif self.req_buf_size > BUFFER_HIGH:
            self.client.pause_buffer_full()

    def request_end(self) -> None:
        req = self.req
        if req is REQ_DONE:
            raise LocalProtocolError("request cannot end twice")
        self.req = REQ_DONE  # every other state may end (REQUEST_MOVES)
        if req is REQ_DISCARDING:
            if self.resp is RESP_DONE:
                self.finish()
            return
        if req is REQ_STREAMING:
            up = self.upstream
            if self.up_chunked and up is not None:
                up.write(CHUNK_END)
        elif self.body_limit >= 0:
            self.body_ready(None)

    def request_raw(self, data: bytes) -> None:
        """Client bytes after an Upgrade head: held until the 101, then tunnelled."""
        up = self.upstream
        if self.resp is RESP_TUNNEL and up is not None:
            up.write(data)
        elif self.raw_buf is not None:
            self.raw_buf.append(data)
        elif data:
            self.raw_buf = [data]

    def lost(self, flag: str) -> None:
        """The client went away or broke the protocol mid-exchange: drop everything."""
        if self.finished:
            return
        if self.flag == "-":
            self.flag = flag
        self.release_upstream(False)
        self.keep_alive = False
        self.finish()

    def timeout(self, now: float, idle_for: float) -> None:
        """About once a second: no answer in time, or no byte either way for too long."""
        opts = self.options
        waiting = self.upstream is not None and not self.resp_started
        if waiting and now - self.forwarded_at > opts.request_timeout:
            self.upstream_error("upstream_timeout", f"no response within {opts.request_timeout:g}s")
            return
        if idle_for <= opts.stream_idle_timeout:
            return
        if self.resp_started:
            self.lost("SI")
            self.client.close()
        elif self.req is not REQ_DONE:  # the client stopped sending its body: its fault, 408
            self.keep_alive = False
            self.fail("request_timeout", f"no request bytes for {opts.stream_idle_timeout:g}s")

    # ---- the request leaves ---------------------------------------------------------------------
    def attach(self, up: UpstreamPort, head: bytes, body: bytes | None) -> None:
        """The request leaves on ``up``: ``head``, then ``body`` if it replaced the client's, else
        what of the client's body is in (chunk-framed when ``up_chunked``), in one write; the rest
        of the body follows as it comes.

        An idempotent request sent whole on a reused keep-alive connection may be replayed once
        if that connection turns out to have been closed by the upstream (the keep-alive race).
        """
        req = self.head
        state = self.req
        if body is not None:
            data = head + body
        elif self.up_chunked:
            parts = [head]
            parts.extend(chunk(b) for b in self.req_buf)
            if state is REQ_DONE:
                parts.append(CHUNK_END)
            data = b"".join(parts)
        elif self.req_buf:
            data = b"".join([head, *self.req_buf])
        else:
            data = head
        complete = (body is not None or state is REQ_DONE or not req.has_body) and not req.upgrade
        replayable = complete and req.method in IDEMPOTENT and up.requests > 0 and not self.retried
        self.replay = data if replayable else None
        self.send_on(up, data)
        if self.req_buf:
            self.req_buf = []
            self.req_buf_size = 0
        if state is REQ_RECEIVING:
            self._req_to(REQ_STREAMING)
        self.client.resume_buffer_full()

    def send_on(self, up: UpstreamPort, data: bytes) -> None:
        """``data`` (the whole request or its start) goes to ``up``, which now serves us."""
        self.upstream = up
        up.exchange = self
        if self.client.write_paused:
            up.pause_reading()  # the client is still behind on an earlier response
        up.requests += 1
        up.expect(self.head.method == "HEAD")
        self.forwarded_at = self.clock()
        up.write(data)

    def release_upstream(self, reusable: bool) -> None:
        up = self.upstream
        if up is None:
            return
        self.upstream = None
        if reusable and up.exchange is self:
            self.client.release_upstream(up)
        else:
            up.close()

    # ---- events from the upstream ---------------------------------------------------------------
    def response_head(self, rh: ResponseHead) -> None:
        self.activity += 1
        status = rh.status
        if status < 200:
            if status == 101 and self.head.upgrade:
                self._start_tunnel(rh)
                return
            self._resp_to(RESP_INTERIM)
            if status == 100 and self.head.expect_continue and not self.continue_sent:
                self.continue_sent = True
                self.client.write(CONTINUE)
            return
        observer = self.observer
        if observer is not None and observer.on_head(rh):
            return  # dropped: the request is retried on another endpoint
        self.status = status
        self.up_keep_alive = rh.keep_alive
        ctx = self.ctx
        if ctx is not None:
            ctx.response_status = status
            ctx.upstream_duration = self.clock() - self.forwarded_at
        drop = _dropped_fields(rh.connection)
        head = self.head
        no_body = head.method == "HEAD" or status == 204 or status == 304
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
            kept = [
                f"{n}: {v}" for n, v in str_headers if not (strip_length and n.lower() == "content-length")
            ]
            text = "\r\n".join(kept)
            lines = [status_line(status, rh.reason)]
            if text.count("\n") == text.count("\r") == len(kept) - 1 and "\x00" not in text:
                if kept:
                    lines.append(text.encode("latin-1"))
            else:  # a filter put CR, LF or NUL in a field: drop such fields, never split the head
                pairs = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in str_headers]
                lines += [
                    n + b": " + v
                    for n, v in clean_fields(pairs)
                    if not (strip_length and n.lower() == b"content-length")
                ]
        else:
            # the head serialized in one pass over the upstream's fields (bytes as they came)
            lines = [status_line(status, rh.reason)]
            lines += [n + b": " + v for n, v in rh.headers if n.lower() not in drop]
        if no_body:
            self.mode = MODE_NONE
        elif rewrite or rh.content_length is None:
            if head.version == "1.1":
                self.mode = MODE_CHUNKED
                lines.append(b"transfer-encoding: chunked")
            else:
                self.mode = MODE_CLOSE
                self.keep_alive = False
        else:
            self.mode = MODE_RAW
        if not self.keep_alive or self.client.closing:
            self.keep_alive = False
            lines.append(b"connection: close")
        elif head.version == "1.0":
            lines.append(b"connection: keep-alive")
        lines.append(b"\r\n")
        data = b"\r\n".join(lines)
        if rewrite and not no_body:
            # Held until the filters release a body byte (or the body ends): while they hold the
            # whole body back, a ResponseDenied can still turn this response into a local answer.
            self._resp_to(RESP_HELD)
            self.head_pending = data
        else:
            if self.resp is RESP_WAITING:
                self.resp = RESP_BODY  # the usual move, checked without a call
            else:
                self._resp_to(RESP_BODY)
            self.client.write(data)

    def response_data(self, data: bytes) -> None:
        self.activity += 1
        if self.resp is RESP_INTERIM or self.resp is RESP_TUNNEL:
            return
        chain = self.chain
        ctx = self.ctx
        if chain is not None and chain.chunk and ctx is not None:
            try:
                for f in chain.chunk:
                    data = f.on_response_chunk(ctx, data)
            except StreamAbort as abort:
                self._stream_abort(abort)
                return
        if data:
            observer = self.observer
            if observer is not None:
                observer.on_data(data)
            self.bytes_out += len(data)
            if self.resp is RESP_HELD:
                self._release_head()
            self.client.write(chunk(data) if self.mode == MODE_CHUNKED else data)

    def response_end(self) -> None:
        resp = self.resp
        if resp is RESP_INTERIM:
            self._resp_to(RESP_WAITING)
            return
        if resp is RESP_DONE or resp is RESP_TUNNEL:
            return  # a 101's own end: raw bytes follow
        tail = b""
        chain = self.chain
        ctx = self.ctx
        if chain is not None and chain.chunk and ctx is not None:
            try:
                for f in chain.chunk:
                    if tail:
                        tail = f.on_response_chunk(ctx, tail)
                    tail += f.on_response_end(ctx)
            except StreamAbort as abort:
                if self.resp is RESP_HELD and isinstance(abort, ResponseDenied):
                    # the whole response was read: its upstream connection may serve again
                    self.release_upstream(self.up_keep_alive and self.req is REQ_DONE)
                self._stream_abort(abort)
                return
        if resp is RESP_HELD:
            self._release_head()
        mode = self.mode
        if tail:
            self.bytes_out += len(tail)
            self.client.write(chunk(tail) if mode == MODE_CHUNKED else tail)
        if mode == MODE_CHUNKED:
            self.client.write(CHUNK_END)
        self.resp = RESP_DONE  # from HELD or BODY: both may end (RESPONSE_MOVES)
        self.release_upstream(self.up_keep_alive and self.req is REQ_DONE)
        if self.req is not REQ_DONE:
            self.keep_alive = False  # the app answered before the body ended: start afresh
        self.finish()

    def _release_head(self) -> None:
        """The held head leaves, before the first body byte the filters let through."""
        self._resp_to(RESP_BODY)
        head = self.head_pending
        self.head_pending = b""
        self.client.write(head)

    def _stream_abort(self, abort: StreamAbort) -> None:
        """A response filter cut the stream: write its tail, end cleanly, drop the upstream.

        A :class:`ResponseDenied` before any response byte left is answered as its denial instead.
        """
        if self.resp is RESP_HELD:
            if isinstance(abort, ResponseDenied):
                self.deny(abort.denial)
                return
            self._release_head()
        ctx = self.ctx
        if ctx is not None:
            ctx.scratch["stream_abort"] = abort.reason
        if abort.tail:
            self.bytes_out += len(abort.tail)
            self.client.write(chunk(abort.tail) if self.mode == MODE_CHUNKED else abort.tail)
        if self.mode == MODE_CHUNKED:
            self.client.write(CHUNK_END)
        else:
            self.keep_alive = False  # a Content-Length body cannot end early: close instead
        self._resp_to(RESP_DONE)
        self.release_upstream(False)
        if self.req is not REQ_DONE:
            self.keep_alive = False
        self.finish()

    def upstream_error(self, name: str, detail: str | None) -> None:
        """The upstream failed (reset, TLS alert, bad response, timeout)."""
        up = self.upstream
        self.release_upstream(False)
        if self.finished:
            return
        resp = self.resp
        replay = self.replay
        if name == "upstream_reset" and replay is not None and up is not None and not self.resp_started:
            self.replay = None
            self.retried = True
            self.replay_on(up.target, replay)
            return
        observer = self.observer
        if observer is not None and not self.resp_started and observer.on_error(name):
            return  # retried on another endpoint
        if resp is RESP_TUNNEL:
            self.finish()
            self.client.close()
        elif resp in _NOT_SENT:
            self.fail(name, detail)  # nothing of the response was sent yet: a clean 502/504
        else:
            self.flag = _MID_BODY_FLAGS.get(name, "UC")
            self.keep_alive = False
            self.finish()
            self.client.close()  # mid-body: the client must see a truncated response

    # ---- upgrade (WebSocket) and CONNECT tunnels --------------------------------------------------
    def _start_tunnel(self, rh: ResponseHead) -> None:
        """A 101 to the Upgrade asked for (exactly ``websocket``) becomes a tunnel; any other is a 502."""
        if not any(n.lower() == b"upgrade" and v.strip().lower() == b"websocket" for n, v in rh.headers):
            self.upstream_error("upstream_protocol", "101 answer does not switch to the protocol asked for")
            return
        headers = [(n, v) for n, v in rh.headers if n.lower() not in (b"keep-alive", b"transfer-encoding")]
        self.open_tunnel(101, response_head(101, rh.reason or None, headers))

    def open_tunnel(self, status: int, head: bytes) -> None:
        """Answer ``head`` and pass raw bytes both ways from now on (held client bytes first)."""
        self._resp_to(RESP_TUNNEL)
        self.status = status
        self.keep_alive = False
        ctx = self.ctx
        if ctx is not None:
            ctx.response_status = status
        self.client.write(head)
        up = self.upstream
        if up is not None and self.raw_buf:
            up.write(b"".join(self.raw_buf))
        self.raw_buf = None

    def upstream_raw(self, data: bytes) -> None:
        self.activity += 1
        if data:
            self.bytes_out += len(data)
            self.client.write(data)

    def upstream_closed(self) -> None:
        self.upstream = None
        self.keep_alive = False
        self.finish()
        self.client.close()

    # ---- local answers ----------------------------------------------------------------------------
    def deny(self, denial: Denial) -> None:
        """A filter answered: the one Denial → response mapping, then finish."""
        ctx = self.ctx
        if ctx is not None:
            # The denial decided: its policy, not an earlier filter's ALLOW (e.g. a rate limit
            # refusing a request authz allowed), is what telemetry and audit name.
            ctx.decision = "deny"
            ctx.policy = denial.policy
            ctx.rule = denial.rule
        close = self._close_after_local()
        protocol = ctx.ai.protocol if ctx is not None else None
        self._send_local(denial_reply(denial, self.request_id, close, self.head.method == "HEAD", protocol))

    def fail(self, name: str, detail: str | None) -> None:
        """Answer one of the sidecar's own failures (:data:`meshward.proxy.responses.FAILURES`)."""
        close = self._close_after_local()
        ctx = self.ctx
        protocol = ctx.ai.protocol if ctx is not None else None
        self._send_local(
            failure_reply(name, self.request_id, detail, close, self.head.method == "HEAD", protocol)
        )

    def reply_error(self, exc: RemoteProtocolError) -> None:
        """A request the parser/normalizer refused after its head (bad path, body too large)."""
        self.keep_alive = False
        data = render(exc.status, exc.message, self.request_id, close=True)
        self._send_local(LocalReply(data, exc.status, "DPE", True))

    def _close_after_local(self) -> bool:
        """Whether the connection must close after a local answer (unread body, upgrade)."""
        head = self.head
        if head.upgrade:
            return True
        if self.req is REQ_DONE or not head.has_body:
            return not self.keep_alive
        if head.expect_continue and not self.continue_sent:
            return True  # the client may never send the body it announced
        if head.content_length is not None and head.content_length - self.bytes_in <= DISCARD_MAX:
            return not self.keep_alive
        return True

    def _send_local(self, reply: LocalReply) -> None:
        if self.finished or self.resp not in _NOT_SENT:
            return
        self.head_pending = b""  # a held upstream head (nothing of it was sent) is dropped
        self.release_upstream(False)
        self.status = reply.status
        self.flag = reply.flag
        self._resp_to(RESP_DONE)
        ctx = self.ctx
        if ctx is not None:
            ctx.response_status = reply.status
            ctx.response_flags = reply.flag
        self.client.write(reply.data)
        if reply.close:
            self.keep_alive = False
            self.finish()
            self.client.close()
        elif self.req is REQ_DONE:
            self.finish()
        else:
            self._req_to(REQ_DISCARDING)  # drop the rest of the (small) body, then serve the next
            self.req_buf = []
            self.client.resume_buffer_full()

    # ---- the end ----------------------------------------------------------------------------------
    def finish(self) -> None:
        """Exactly once: record the outcome, run every filter's on_complete, free the connection."""
        if self.finished:
            return
        self.finished = True
        self.stop_handler()
        ctx = self.ctx
        if ctx is not None:
            ctx.response_status = ctx.response_status or self.status
            if ctx.response_flags == "-":
                ctx.response_flags = self.flag
            ctx.bytes_received = self.bytes_in
            ctx.bytes_sent = self.bytes_out
            chain = self.chain
            if chain is not None:
                for f in chain.complete:
                    try:
                        f.on_complete(ctx)
                    except Exception:
                        log.exception("filter %s failed in on_complete", f.name)
        observer = self.observer
        if observer is not None:
            self.observer = None  # it holds this exchange: no cycle left for the GC
            observer.on_finish()
        self.client.exchange_finished(self)
