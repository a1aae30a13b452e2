"""Upstream connections and the keep-alive pool (to the app on loopback, or to a peer sidecar).

The pool's decisions (reuse, park, evict) are synchronous and separate from connecting;
connecting translates library exceptions into :class:`UpstreamError` at the boundary, named
after :data:`meshward.proxy.responses.FAILURES`. An mTLS upstream is only handed out after its
SPIFFE ID was checked against the identities allowed for the service.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from mypy_extensions import mypyc_attr

from meshward.http.errors import RemoteProtocolError
from meshward.http.parser import Data, EndOfMessage, ResponseHead, ResponseParser, Upgrade
from meshward.tls.identity import ReloadableIdentity
from meshward.tls.peer import PeerIdentityError, peer_identity

if TYPE_CHECKING:
    from meshward.proxy.machine import ExchangeMachine

__all__ = ["UpstreamConnection", "UpstreamError", "UpstreamPool", "UpstreamTarget"]

log = logging.getLogger("meshward.proxy.upstream")


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """Where to connect and what to demand of the server (mTLS: one of ``identities``)."""

    host: str
    port: int
    tls: bool = False
    server_name: str | None = None
    identities: frozenset[str] = frozenset()
    key: tuple[object, ...] = ()  # the pool key, computed once (targets are built per snapshot)
    # TLS to a server outside the mesh (meshward.egress.tls): verified by CA and host name, not SPIFFE
    ssl_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        key = (self.host, self.port, self.tls, self.server_name, self.identities, self.ssl_context)
        object.__setattr__(self, "key", key)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class UpstreamError(Exception):
    """Connecting to an upstream failed; ``name`` is a key of ``FAILURES``."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail


class UpstreamConnection(asyncio.Protocol):
    """One connection to an upstream; serves one exchange at a time (no pipelining)."""

    def __init__(self, pool: UpstreamPool, target: UpstreamTarget) -> None:
        self.pool = pool
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser()
        self.exchange: ExchangeMachine | None = None
        self.closed = False
        self.upgraded = False
        self.idle_since = 0.0
        self.peer_id: str | None = None
        self.requests = 0
        self.reading_paused = False

    # asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = tr = cast(asyncio.Transport, transport)
        tr.set_write_buffer_limits(high=self.pool.write_buffer_high)

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            self.close()  # an idle upstream must not talk: it cannot be trusted for reuse
            return
        if self.upgraded:
            ex.upstream_raw(data)
            return
        downstream = ex.client
        downstream.cork()
        try:
            try:
                events = self.parser.feed(data)
            except RemoteProtocolError as exc:
                ex.upstream_error("upstream_protocol", exc.message)
                return
            for ev in events:
                ex = self.exchange
                if ex is None:
                    return
                kind = type(ev)
                if kind is Data:
                    ex.response_data(ev.data)  # type: ignore[union-attr]
                elif kind is ResponseHead:
                    ex.response_head(ev)  # type: ignore[arg-type]
                elif kind is EndOfMessage:
                    ex.response_end()
                elif kind is Upgrade:
                    if not ex.tunnel:  # a 101 nobody asked for: never a raw channel to the client
                        ex.upstream_error("upstream_protocol", "unrequested protocol switch")
                        return
                    self.upgraded = True
                    ex.upstream_raw(ev.rest)  # type: ignore[union-attr]
        finally:
            downstream.uncork()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        ex = self.exchange
        if ex is None:
            return
        self.exchange = None
        if self.upgraded:
            ex.upstream_closed()
            return
        try:
            events = self.parser.eof()
        except RemoteProtocolError:
            if isinstance(exc, ssl.SSLError):
                ex.upstream_error("upstream_tls", exc.reason or str(exc))
            else:
                ex.upstream_error("upstream_reset", "")
            return
        if events:
            ex.response_end()
        else:
            ex.upstream_error("upstream_reset", "")

    def pause_writing(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.client.pause_upstream_full()

    def resume_writing(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.client.resume_upstream_full()

    # -----------------------------------------------------------------------------------------
    def pause_reading(self) -> None:
        """The client reads slower than we receive: stop reading from the upstream."""
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def expect(self, head_request: bool) -> None:
        """The next response answers a HEAD (no body, whatever it says)."""
        self.parser.expect(head_request)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        self.exchange = None
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()
            self.pool.forget(self)


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled; the transcript tests record it
class UpstreamPool:
    """Idle keep-alive connections per target; connects (and checks identity) when none is idle."""

    def __init__(
        self,
        identity: ReloadableIdentity,
        trust_domain: Callable[[], str],
        connect_timeout: float,
        idle_timeout: float,
        max_idle: int,
        write_buffer_high: int,
    ) -> None:
        self.identity = identity
        self.trust_domain = trust_domain
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self.write_buffer_high = write_buffer_high
        self.idle: dict[tuple[object, ...], list[UpstreamConnection]] = {}
        self.connects = 0
        self.reuses = 0

    def take_idle(self, target: UpstreamTarget) -> UpstreamConnection | None:
        conns = self.idle.get(target.key)
        while conns:
            conn = conns.pop()
            if not conn.closed:
                self.reuses += 1
                return conn
        return None

    async def connect(self, target: UpstreamTarget) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        ctx = target.ssl_context or (self.identity.client_context if target.tls else None)
        self.connects += 1
        try:
            # wait_for, not asyncio.timeout(): this may run eagerly, outside any Task
            transport, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConnection(self, target),
                    target.host,
                    target.port,
                    ssl=ctx,
                    server_hostname=(target.server_name or "") if ctx else None,
                ),
                self.connect_timeout,
            )
        except TimeoutError:
            raise UpstreamError(
                "upstream_connect", f"{target} timed out after {self.connect_timeout:g}s"
            ) from None
        except ssl.SSLError as tls_error:
            raise UpstreamError("upstream_tls", f"{target}: {tls_error.reason or tls_error}") from None
        except OSError as os_error:
            raise UpstreamError("upstream_connect", f"{target}: {os_error.strerror or os_error}") from None
        if ctx is not None and target.ssl_context is None:
            try:
                sslobj = transport.get_extra_info("ssl_object")
                peer = peer_identity(sslobj, self.trust_domain(), self.identity.revoked)
            except PeerIdentityError as refused:
                conn.close()
                raise UpstreamError("upstream_identity", f"{target}: {refused}") from None
            if peer.uri not in target.identities:
                conn.close()
                raise UpstreamError(
                    "upstream_identity",
                    f"{target} presented {peer.uri}, expected {' or '.join(sorted(target.identities))}",
                )
            conn.peer_id = peer.uri
        return conn

    def release(self, conn: UpstreamConnection, now: float) -> None:
        """Park a connection whose exchange ended cleanly; close it if the pool is full."""
        conn.exchange = None
        if conn.closed or conn.upgraded:
            conn.close()
            return
        conn.resume_reading()  # a pooled connection must notice the upstream closing it
        conns = self.idle.setdefault(conn.target.key, [])
        if len(conns) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = now
        conns.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        conns = self.idle.get(conn.target.key)
        if conns and conn in conns:
            conns.remove(conn)

    def sweep(self, now: float) -> None:
        """Close connections idle for longer than ``idle_timeout``."""
        for conns in list(self.idle.values()):
            for conn in [c for c in conns if now - c.idle_since > self.idle_timeout]:
                conn.close()

    def close_all(self) -> None:
        for conns in list(self.idle.values()):
            for conn in list(conns):
                conn.close()
        self.idle.clear()

    @property
    def idle_count(self) -> int:
        return sum(len(c) for c in self.idle.values())
