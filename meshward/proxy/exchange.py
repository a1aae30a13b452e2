"""One request/response exchange on a downstream connection: the proxy's per-request path.

The request side runs as a task (filters may await); the response side runs in the upstream
protocol's callbacks, chunk by chunk, without buffering whole bodies:

    head ─▶ side.handle(ex) ─▶ [filters] ─▶ forward() ─▶ upstream
                                             upstream ─▶ on_response_head/data/end ─▶ client

Body bytes that arrive before the upstream is ready are buffered up to a bound (then the
client is paused); a filter that asked for the body gets it whole, up to
``max_buffered_body`` (413 above). :meth:`finish` runs exactly once per exchange and calls
every filter's ``on_complete`` whatever happened (forwarded, denied, failed, aborted).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from meshward.filters.base import Denial, RequestContext
from meshward.http.errors import BodyTooLarge, RemoteProtocolError
from meshward.http.framing import (
    CHUNK_END,
    chunk,
)
from meshward.http.parser import RequestHead
from meshward.proxy import response
from meshward.proxy.compiled import CompiledChain
from meshward.proxy.eager import start_eagerly
from meshward.proxy.response import CONTINUE, MODE_NONE
from meshward.proxy.responses import LocalReply, denial_reply, failure_reply, render
from meshward.proxy.upstream import UpstreamConnection, UpstreamError, UpstreamTarget

if TYPE_CHECKING:
    from meshward.proxy.downstream import DownstreamConnection
    from meshward.rollout.forward import Attempt

__all__ = ["Exchange"]

log = logging.getLogger("meshward.proxy")

_BUFFER_HIGH = 256 * 1024  # request bytes held while connecting before the client is paused
_DISCARD_MAX = 64 * 1024  # after a local answer, read and drop at most this much body
# Methods a proxy may send twice (RFC 9110 §9.2.2): a POST the app may already have acted on
# (a charge, a tool call, a fine-tuning job) is never replayed, whatever the failure looked like.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class Exchange:
    """State of one request; created by the connection when a head was parsed."""

    __slots__ = (
        "activity",
        "body_limit",
        "body_waiter",
        "bytes_in",
        "bytes_out",
        "chain",
        "conn",
        "continue_sent",
        "ctx",
        "discard",
        "finished",
        "flag",
        "forwarded_at",
        "head",
        "head_pending",
        "informational",
        "keep_alive",
        "loop",
        "observer",
        "raw_buf",
        "replay",
        "req_buf",
        "req_buf_size",
        "req_done",
        "request_id",
        "resp_done",
        "resp_keep_alive_up",
        "resp_mode",
        "resp_started",
        "retried",
        "start",
        "status",
        "streaming",
        "task",
        "tunnel",
        "up_chunked",
        "upstream",
    )

    def __init__(self, conn: DownstreamConnection, head: RequestHead, request_id: str) -> None:
        self.conn = conn
        self.head = head
        self.request_id = request_id
        self.loop = conn.loop
        self.start = self.loop.time()
        self.ctx: RequestContext | None = None
        self.chain: CompiledChain | None = None
        # request side
        self.req_done = False
        self.req_buf: list[bytes] = []
        self.req_buf_size = 0
        self.body_waiter: asyncio.Future[None] | None = None
        self.body_limit = 0
        self.discard = False
        self.continue_sent = False
        self.raw_buf: list[bytes] | None = None  # upgrade: client bytes before the 101
        # upstream side
        self.upstream: UpstreamConnection | None = None
        self.up_chunked = False
        self.streaming = False  # request body now flows straight to the upstream
        self.forwarded_at = 0.0
        self.replay: bytes | None = None
        self.retried = False
        self.informational = False
        self.tunnel = False
        # response side
        self.resp_started = False
        self.head_pending: bytes | None = None  # response head held until a body byte leaves
        self.resp_done = False
        self.resp_mode = MODE_NONE
        self.resp_keep_alive_up = False
        self.keep_alive = head.keep_alive and not head.upgrade
        self.status = 0
        self.flag = "-"
        self.bytes_in = 0
        self.bytes_out = 0
        self.activity = 0
        self.finished = False
        self.task: asyncio.Task[None] | None = None
        # meshward.rollout.forward.Attempt when a service plan serves this request (outbound):
        # sees the answer's status first (retries), its body (mirror compare), the outcome
        self.observer: Attempt | None = None

    # ---- request side: events from the client -------------------------------------------------
    def begin(self) -> None:
        if self.conn.side.eager:
            self.task = start_eagerly(self.run())
        else:
            self.task = self.loop.create_task(self.run())

    async def run(self) -> None:
        try:
            await self.conn.side.handle(self)
        except UpstreamError as exc:
            self.fail(exc.name, exc.detail)
        except RemoteProtocolError as exc:
            self.conn.sidecar.stats.protocol_errors[(self.conn.side.name, exc.status)] += 1
            self.reply_error(exc)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("internal error in request %s", self.request_id)
            if not self.resp_started:
                self.fail("internal", None)
            else:
                self.abort("DPE")

    def on_request_data(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.activity += 1
        if self.discard:
            if self.bytes_in > _DISCARD_MAX:
                self.keep_alive = False
                self.conn.close()
            return
        if self.streaming:
            up = self.upstream
            if up is not None:
                up.write(chunk(data) if self.up_chunked else data)
            return
        self.req_buf.append(data)
        self.req_buf_size += len(data)
        waiter = self.body_waiter
        if waiter is not None:
            if self.req_buf_size > self.body_limit and not waiter.done():
                waiter.set_exception(BodyTooLarge(f"request body larger than {self.body_limit} bytes"))
        elif self.req_buf_size > _BUFFER_HIGH:
            self.conn.pause_buffer_full()

    def on_request_end(self) -> None:
        self.req_done = True
        if self.discard:
            if self.resp_done:
                self.finish()
            return
        if self.streaming and self.up_chunked and self.upstream is not None:
            self.upstream.write(CHUNK_END)
        waiter = self.body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_request_raw(self, data: bytes) -> None:
        """Client bytes after an Upgrade head: held until the 101, then tunnelled."""
        if self.tunnel and self.upstream is not None:
            self.upstream.write(data)
        elif self.raw_buf is not None:
            self.raw_buf.append(data)
        elif data:
            self.raw_buf = [data]

    async def read_body(self, limit: int) -> bytes:
        """The whole request body (bounded by ``limit``; 413 above). Answers 100-continue."""
        if self.head.content_length is not None and self.head.content_length > limit:
            raise BodyTooLarge(f"request body larger than {limit} bytes")
        if self.head.expect_continue and not self.continue_sent:
            self.continue_sent = True
            self.conn.write(CONTINUE)
        if not self.req_done:
            self.body_limit = limit
            self.body_waiter = self.loop.create_future()
            self.conn.resume_buffer_full()
            try:
                if self.req_buf_size > limit:
                    raise BodyTooLarge(f"request body larger than {limit} bytes")
                await self.body_waiter
            finally:
                self.body_waiter = None
        body = b"".join(self.req_buf)
        self.req_buf = [body] if body else []
        return body

    # ---- forwarding ---------------------------------------------------------------------------
    async def forward(self, target: UpstreamTarget, head: bytes, body: bytes | None = None) -> None:
        """Send the request head (and ``body`` if it was replaced) to ``target``.

        ``head`` is the serialized request head, framed by the caller: Content-Length of
        ``body`` when given, else chunked when ``up_chunked`` is set, else the client's length.
        """
        pool = self.conn.sidecar.pool
        up = pool.take_idle(target)
        if up is None:
            up = await pool.connect(target)
        if self.finished:
            pool.release(up, self.loop.time())
            return
        if body is not None:
            data = head + body
        else:
            parts = [head]
            if self.up_chunked:
                parts.extend(chunk(b) for b in self.req_buf)
                if self.req_done:
                    parts.append(CHUNK_END)
            else:
                parts.extend(self.req_buf)
            data = b"".join(parts)
        # An idempotent request sent whole on a reused keep-alive connection may be replayed once
        # if that connection turns out to have been closed by the upstream (the keep-alive race).
        req = self.head
        complete = (body is not None or self.req_done or not req.has_body) and not req.upgrade
        replayable = complete and req.method in _IDEMPOTENT and up.requests > 0 and not self.retried
        self.replay = data if replayable else None
        self._send(up, data)
        self.req_buf = []
        self.req_buf_size = 0
        self.streaming = True
        self.conn.resume_buffer_full()

    def _send(self, up: UpstreamConnection, data: bytes) -> None:
        self.upstream = up
        up.exchange = self
        if self.conn.write_paused:
            up.pause_reading()  # the client is still behind on an earlier response
        up.requests += 1
        up.parser.expect(self.head.method == "HEAD")
        self.forwarded_at = self.loop.time()
        up.write(data)

    async def _replay(self, target: UpstreamTarget, data: bytes) -> None:
        try:
            up = await self.conn.sidecar.pool.connect(target)
        except UpstreamError as exc:
            self.fail(exc.name, exc.detail)
            return
        if self.finished:
            up.close()
            return
        self._send(up, data)

    # ---- response side (meshward.proxy.response) ------------------------------------------------
    on_response_head = response.on_response_head
    on_response_data = response.on_response_data
    on_response_end = response.on_response_end
    stream_abort = response.stream_abort
    on_upstream_error = response.on_upstream_error
    start_tunnel = response.start_tunnel
    on_upstream_raw = response.on_upstream_raw
    on_upstream_closed = response.on_upstream_closed

    # ---- local answers ------------------------------------------------------------------------
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
        close = self._close_after_local()
        protocol = self.ctx.ai.protocol if self.ctx is not None else None
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
        if self.req_done or not head.has_body:
            return not self.keep_alive
        if head.expect_continue and not self.continue_sent:
            return True  # the client may never send the body it announced
        if head.content_length is not None and head.content_length - self.bytes_in <= _DISCARD_MAX:
            return not self.keep_alive
        return True

    def _send_local(self, reply: LocalReply) -> None:
        if self.finished or (self.resp_started and self.head_pending is None):
            return
        self.head_pending = None  # a held upstream head (nothing of it was sent) is dropped
        self._release_upstream(False)
        self.status = reply.status
        self.flag = reply.flag
        self.resp_started = True
        self.resp_done = True
        if self.ctx is not None:
            self.ctx.response_status = reply.status
            self.ctx.response_flags = reply.flag
        self.conn.write(reply.data)
        if reply.close:
            self.keep_alive = False
            self.finish()
            self.conn.close()
        elif self.req_done:
            self.finish()
        else:
            self.discard = True  # drop the rest of the (small) body, then serve the next request
            self.req_buf = []
            self.conn.resume_buffer_full()

    # ---- ending -------------------------------------------------------------------------------
    def _release_upstream(self, reusable: bool) -> None:
        up = self.upstream
        if up is None:
            return
        self.upstream = None
        if reusable and up.exchange is self:
            self.conn.sidecar.pool.release(up, self.loop.time())
        else:
            up.close()

    def abort(self, flag: str) -> None:
        """The client went away or broke the protocol mid-exchange: drop everything."""
        if self.finished:
            return
        if self.flag == "-":
            self.flag = flag
        self._release_upstream(False)
        self.keep_alive = False
        self.finish()

    def check_timeouts(self, now: float, idle_for: float) -> None:
        """Called about once a second by the sidecar's sweeper."""
        opts = self.conn.sidecar.options
        waiting = self.upstream is not None and not self.resp_started and not self.tunnel
        if waiting and now - self.forwarded_at > opts.request_timeout:
            self.on_upstream_error("upstream_timeout", f"no response within {opts.request_timeout}s")
            return
        if idle_for <= opts.stream_idle_timeout:
            return
        if self.resp_started or self.tunnel:
            self.abort("SI")
            self.conn.close()
        elif not self.req_done:  # the client stopped sending its body: its fault, 408
            self.keep_alive = False
            self.fail("request_timeout", f"no request bytes for {opts.stream_idle_timeout}s")

    def finish(self) -> None:
        """Exactly once: record the outcome, run every filter's on_complete, free the connection."""
        if self.finished:
            return
        self.finished = True
        task = self.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()  # e.g. still waiting for a body that will never come
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
        if self.observer is not None:
            self.observer.on_finish(self)
        stats = self.conn.sidecar.stats
        side = self.conn.side.name
        stats.requests[(side, self.status, self.flag)] += 1
        stats.bytes_in[side] += self.bytes_in
        stats.bytes_out[side] += self.bytes_out
        self.conn.exchange_finished(self)
