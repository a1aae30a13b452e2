"""The request side of an exchange: the coroutine that runs the filters and forwards.

The handler (:func:`~meshward.proxy.inbound.handle_inbound` or
:func:`~meshward.proxy.outbound.handle_outbound`) runs eagerly in the parsing callback (no Task
when nothing waits, see :mod:`meshward.proxy.eager`) or as a Task; it reads the body when a
filter asks (:meth:`Exchange.read_body`, 100-continue answered there), then
:meth:`Exchange.forward` connects (or takes a pooled connection) and hands the request to the
sans-IO machine (:mod:`meshward.proxy.machine`), which does everything else::

    head ─▶ side.handle(ex) ─▶ [filters] ─▶ forward() ─▶ machine.attach ─▶ upstream
                                          upstream ─▶ machine.response_* ─▶ client
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from meshward.http.errors import BodyTooLarge, RemoteProtocolError
from meshward.http.parser import RequestHead
from meshward.proxy.eager import start_eagerly
from meshward.proxy.machine import CONTINUE, ExchangeMachine
from meshward.proxy.states import REQ_DONE
from meshward.proxy.upstream import UpstreamError, UpstreamTarget

if TYPE_CHECKING:
    from meshward.proxy.session import ClientSession

__all__ = ["Exchange"]

log = logging.getLogger("meshward.proxy")


class Exchange(ExchangeMachine):
    """One request on a client connection: the machine plus the coroutine that drives it."""

    __slots__ = ("body_waiter", "conn", "loop", "task")

    def __init__(self, conn: ClientSession, head: RequestHead, request_id: str) -> None:
        loop = conn.loop
        ExchangeMachine.__init__(self, conn, head, request_id, loop.time, conn.sidecar.options)
        self.conn = conn
        self.loop = loop
        self.task: asyncio.Task[None] | None = None
        self.body_waiter: asyncio.Future[None] | None = None

    def begin(self) -> None:
        if self.conn.side.eager:
            self.task = start_eagerly(self.run())
        else:
            self.task = self.loop.create_task(self.run())

    async def run(self) -> None:
        try:
            await self.conn.side.handle(self)
        except UpstreamError as error:
            self.fail(error.name, error.detail)
        except RemoteProtocolError as refused:
            self.conn.sidecar.stats.protocol_errors[(self.conn.side.name, refused.status)] += 1
            self.reply_error(refused)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("internal error in request %s", self.request_id)
            if not self.resp_started:
                self.fail("internal", None)
            else:
                self.lost("DPE")

    async def read_body(self, limit: int) -> bytes:
        """The whole request body (bounded by ``limit``; 413 above). Answers 100-continue."""
        head = self.head
        if head.content_length is not None and head.content_length > limit:
            raise BodyTooLarge(f"request body larger than {limit} bytes")
        if head.expect_continue and not self.continue_sent:
            self.continue_sent = True
            self.conn.write(CONTINUE)
        if self.req is not REQ_DONE:
            if self.req_buf_size > limit:
                raise BodyTooLarge(f"request body larger than {limit} bytes")
            waiter = self.body_waiter = self.loop.create_future()
            self.body_limit = limit
            self.conn.resume_buffer_full()
            try:
                await waiter
            finally:
                self.body_waiter = None
                self.body_limit = -1
        body = b"".join(self.req_buf)
        self.req_buf = [body] if body else []
        return body

    def body_ready(self, error: BodyTooLarge | None) -> None:
        waiter = self.body_waiter
        if waiter is None or waiter.done():
            return
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)

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
        self.attach(up, head, body)

    def replay_on(self, target: UpstreamTarget, data: bytes) -> None:
        self.task = self.loop.create_task(self._replay(target, data))

    async def _replay(self, target: UpstreamTarget, data: bytes) -> None:
        try:
            up = await self.conn.sidecar.pool.connect(target)
        except UpstreamError as error:
            self.fail(error.name, error.detail)
            return
        if self.finished:
            up.close()
            return
        self.send_on(up, data)

    def stop_handler(self) -> None:
        task = self.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()  # e.g. still waiting for a body that will never come
