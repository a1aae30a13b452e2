"""One client connection's HTTP session: strict parsing, one exchange at a time, backpressure.

Transport-agnostic: it reads what :class:`~meshward.proxy.downstream.DownstreamConnection` (the
asyncio adapter) hands it and acts on any object with ``write`` / ``pause_reading`` /
``resume_reading`` / ``close`` (asyncio's transport, or a recorder in the transcript tests).
Each request becomes an :class:`~meshward.proxy.exchange.Exchange`; this is its
:class:`~meshward.proxy.states.ClientPort`.

Pipelined requests are parsed but held (and the client paused) until the exchange before them
has answered. Reading from the client pauses for three independent reasons, tracked as a bit
mask so one resume never undoes another's pause: a pipelined request is waiting, the upstream's
write buffer is full, or too much body is buffered while connecting. Writing to a slow client
pauses reading from the upstream (``pause_writing`` → upstream ``pause_reading``).
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Awaitable, Callable
from itertools import count
from typing import TYPE_CHECKING, Final, cast

from meshward.filters.base import Peer
from meshward.http.errors import RemoteProtocolError
from meshward.http.parser import Data, EndOfMessage, Event, RequestHead, RequestParser
from meshward.proxy.exchange import Exchange
from meshward.proxy.machine import ExchangeMachine
from meshward.proxy.responses import render
from meshward.proxy.states import UpstreamPort
from meshward.proxy.upstream import UpstreamConnection
from meshward.tls.peer import PeerIdentity

if TYPE_CHECKING:
    from meshward.proxy.sidecar import Sidecar

__all__ = ["ClientSession", "Side", "new_request_id"]

# Why reading from the client is paused (bits: one resume never undoes another's pause).
_PAUSE_PIPELINE: Final = 1
_PAUSE_UPSTREAM: Final = 2
_PAUSE_BUFFER: Final = 4
_ID_PREFIX = os.urandom(6).hex()
_ids = count(1)


def new_request_id() -> str:
    """Unique per process run and cheap: a random prefix and a counter."""
    return f"{_ID_PREFIX}-{next(_ids):x}"


class Side:
    """One listener's role (inbound or outbound): its name and its request handler."""

    def __init__(
        self, name: str, sidecar: Sidecar, handle: Callable[[Exchange], Awaitable[None]], eager: bool = False
    ) -> None:
        self.name = name
        self.sidecar = sidecar
        self.handle = handle
        # eager: run the handler inside the parsing callback until it first waits (no Task when
        # it never does). Only for handlers that never need asyncio.current_task() up front: our
        # own outbound code always; inbound while every filter's ``eager_safe`` says so (set per
        # generation by the sidecar; a Redis-backed limit uses asyncio.timeout(): a real Task).
        self.eager = eager
        self.connections: set[ClientSession] = set()


class ClientSession:
    """The HTTP side of one client connection (see the module docstring)."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self.sidecar = side.sidecar
        self.loop = asyncio.get_running_loop()
        opts = side.sidecar.options
        self.parser = RequestParser(opts.max_header_bytes, opts.max_headers, opts.max_request_body)
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.pending: deque[Event] | None = None
        self.paused = 0
        self.closing = False
        self.raw = False  # an Upgrade/CONNECT head was parsed: the rest is not HTTP
        self.write_paused = False  # our write buffer to the client is above its high mark
        self.peer = Peer("", 0)
        self.peer_identity: PeerIdentity | None = None
        self.idle_since = self.loop.time()
        self.head_started = False
        self.last_activity = 0
        self.quiet_since = self.idle_since
        self._cork: list[bytes] | None = None
        self.batching = False  # feed() is dispatching one read's events
        self.starting: Exchange | None = None  # its head was parsed in this read; not begun yet

    # ---- events from the adapter -----------------------------------------------------------------
    def start(self, transport: asyncio.Transport, peer: Peer, identity: PeerIdentity | None) -> None:
        """The connection is up (its peer checked): serve it."""
        self.transport = transport
        self.peer = peer
        self.peer_identity = identity
        self.side.sidecar.stats.active[self.side.name] += 1
        self.side.connections.add(self)

    def feed(self, data: bytes) -> None:
        """Bytes read from the client."""
        if self.closing:
            return
        if self.raw:
            ex = self.exchange
            if ex is not None:
                ex.request_raw(data)
            return
        try:
            events = self.parser.feed(data)
        except RemoteProtocolError as exc:
            self.protocol_error(exc)
            return
        if not events and self.exchange is None and not self.head_started:
            self.head_started = True
            self.idle_since = self.loop.time()
        # A head whose body (or end) came in the same read starts only once that body is in:
        # a filter that buffers the body then finds it whole (no wait, so no Task on the eager
        # path) and the forward sends head and body in one write.
        self.batching = True
        try:
            for ev in events:
                starting = self.starting
                if starting is not None and type(ev) is not Data:
                    if type(ev) is EndOfMessage:
                        self.dispatch(ev)
                        self.starting = None
                        starting.begin()
                        continue
                    self.starting = None
                    starting.begin()
                self.dispatch(ev)
        finally:
            self.batching = False
            starting = self.starting
            if starting is not None:
                self.starting = None
                starting.begin()

    def dispatch(self, ev: Event) -> None:
        if self.pending is not None:
            self.pending.append(ev)
            return
        ex = self.exchange
        kind = type(ev)
        if kind is Data:
            if ex is not None:
                ex.request_data(ev.data)  # type: ignore[union-attr]
        elif kind is EndOfMessage:
            if ex is not None:
                ex.request_end()
        elif kind is RequestHead:
            if ex is not None:
                self.pending = deque([ev])
                self._pause(_PAUSE_PIPELINE)
                return
            self.head_started = False
            assert isinstance(ev, RequestHead)
            ex = Exchange(self, ev, _request_id(ev))
            self.exchange = ex
            if self.batching:
                self.starting = ex  # begun by feed() once this read's body events are in
            else:
                ex.begin()
        else:  # Upgrade: what follows the head is raw bytes for the tunnel
            self.raw = True
            if ex is not None:
                ex.request_raw(ev.rest)  # type: ignore[union-attr]

    def lost(self) -> None:
        """The connection ended (either side closed it, or it broke)."""
        was_open = self in self.side.connections
        self.closing = True
        self.side.connections.discard(self)
        if was_open:
            self.sidecar.stats.active[self.side.name] -= 1
        ex = self.exchange
        if ex is not None:
            ex.lost("DC")

    def pause_writing(self) -> None:
        """Our write buffer to the client is above its high mark: stop reading the upstream."""
        self.write_paused = True
        ex = self.exchange
        up = ex.upstream if ex is not None else None
        if up is not None:
            up.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.exchange
        up = ex.upstream if ex is not None else None
        if up is not None:
            up.resume_reading()

    # ---- flow control -------------------------------------------------------------------------
    def _pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None and not self.closing:
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.transport is not None and not self.closing:
            self.transport.resume_reading()

    def pause_upstream_full(self) -> None:
        self._pause(_PAUSE_UPSTREAM)

    def resume_upstream_full(self) -> None:
        self._resume(_PAUSE_UPSTREAM)

    def pause_buffer_full(self) -> None:
        self._pause(_PAUSE_BUFFER)

    def resume_buffer_full(self) -> None:
        self._resume(_PAUSE_BUFFER)

    # ---- writing and ending -------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        cork = self._cork
        if cork is not None:
            cork.append(data)
        elif self.transport is not None and not self.closing:
            self.transport.write(data)

    def cork(self) -> None:
        """Collect writes until :meth:`uncork`: one TLS record and one syscall per upstream read."""
        if self._cork is None:
            self._cork = []

    def uncork(self) -> None:
        cork = self._cork
        self._cork = None
        if cork and self.transport is not None and not self.closing:
            self.transport.write(cork[0] if len(cork) == 1 else b"".join(cork))

    def close(self) -> None:
        if self.transport is not None and not self.closing:
            self.uncork()
            self.closing = True
            self.transport.close()

    def protocol_error(self, exc: RemoteProtocolError) -> None:
        """The client sent something we refuse: answer the status (if we still can) and close."""
        self.sidecar.stats.protocol_errors[(self.side.name, exc.status)] += 1
        ex = self.exchange
        if ex is not None and ex.resp_started:
            ex.lost("DPE")
            self.close()
            return
        if ex is not None:
            ex.reply_error(exc)
            return
        self.write(render(exc.status, exc.message, new_request_id(), close=True))
        self.sidecar.stats.requests[(self.side.name, exc.status, "DPE")] += 1
        self.close()

    def release_upstream(self, up: UpstreamPort) -> None:
        self.sidecar.pool.release(cast(UpstreamConnection, up), self.loop.time())

    def exchange_finished(self, ex: ExchangeMachine) -> None:
        stats = self.sidecar.stats
        side = self.side.name
        stats.requests[(side, ex.status, ex.flag)] += 1
        stats.bytes_in[side] += ex.bytes_in
        stats.bytes_out[side] += ex.bytes_out
        if self.exchange is not ex:
            return
        self.exchange = None
        self.idle_since = self.loop.time()
        if not ex.keep_alive or self.closing or self.raw:
            self.close()
            return
        pending = self.pending
        if pending is None:
            return
        self.pending = None
        while pending:
            self.dispatch(pending.popleft())
            if self.pending is not None:
                self.pending.extend(pending)
                return
        self._resume(_PAUSE_PIPELINE)

    def check_timeouts(self, now: float) -> None:
        """Called about once a second: idle keep-alive, slow heads, stalled exchanges."""
        opts = self.sidecar.options
        ex = self.exchange
        if ex is not None:
            if ex.activity != self.last_activity:
                self.last_activity = ex.activity
                self.quiet_since = now
            ex.timeout(now, now - self.quiet_since)
            return
        self.quiet_since = now
        if self.head_started:
            if now - self.idle_since > opts.header_timeout:
                self.write(render(408, "request head not received in time", new_request_id(), close=True))
                self.close()
        elif now - self.idle_since > opts.idle_timeout:
            self.close()


def _request_id(head: RequestHead) -> str:
    """Keep a well-formed x-request-id from the caller (correlation across hops), else mint one."""
    value = head.request_id
    if value is not None and 0 < len(value) <= 128 and value.replace(b"-", b"").isalnum():
        return value.decode("ascii")
    return new_request_id()
