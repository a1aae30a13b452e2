"""Transcript tests of the proxy core, without sockets (mitmproxy's playbook idea).

A transcript is a table of lines: ``>> who what`` is an event fed to the real connection
adapters (bytes into the real parsers, a lost connection, a timeout sweep), and the ``<<`` lines
under it are every action that event caused, in order::

    >> client GET /a HTTP/1.1|host: m||
    << connect up1
    << up1 GET /a HTTP/1.1|host: m|x-request-id: ...
    >> up1 HTTP/1.1 200 OK|content-length: 2||ok
    << client HTTP/1.1 200 OK|content-length: 2||ok
    << release up1

``|`` stands for CRLF and ``\\n`` for a lone LF; an expected line ending in ``...`` matches any line with that start
(request ids, JSON bodies of local answers). Events:

- ``>> client BYTES`` / ``>> upN BYTES``: bytes read from the client / upstream ``upN``;
- ``>> client lost``, ``>> upN eof``, ``>> upN reset``: a connection ends (cleanly or not);
- ``>> client slow`` / ``>> client drained``: the client's write buffer passes its high mark / drains;
- ``>> upN connected``: a held connect completes (``Transcript(hold_connect=True)``);
- ``>> sweep SECONDS``: the timeout sweeper runs with ``now`` that much after the start.

Actions: ``<< client BYTES`` (one write), ``<< client pause|resume|close``, ``<< connect upN``,
``<< reuse upN`` (taken from the pool), ``<< upN BYTES``, ``<< upN pause|resume|close``,
``<< release upN`` (parked in the pool).

The handler is a small inbound-like one: it builds the :class:`RequestContext`, runs the chain's
request filters (reading the body when one asks), and forwards with the head built by
:func:`meshward.proxy.forwarded.field_lines` to one upstream target.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Sequence
from typing import Any, cast

from meshward.filters.base import Filter, Peer, RequestContext
from meshward.http.hygiene import clean_request_headers
from meshward.proxy.downstream import DownstreamConnection, Side
from meshward.proxy.exchange import Exchange
from meshward.proxy.forwarded import field_lines
from meshward.proxy.hooks import CompiledChain
from meshward.proxy.options import SidecarOptions
from meshward.proxy.sidecar import Sidecar
from meshward.proxy.stats import ProxyStats
from meshward.proxy.upstream import UpstreamConnection, UpstreamError, UpstreamPool, UpstreamTarget

__all__ = ["Transcript", "play"]

TARGET = UpstreamTarget("app.test", 80)
_SKIP = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade", "content-length", "te"})


def show(data: bytes) -> str:
    return data.decode("latin-1").replace("\r\n", "|").replace("\n", "\\n")


def wire(text: str) -> bytes:
    return text.replace("|", "\r\n").replace("\\n", "\n").encode("latin-1")


class FakeTransport:
    """Records what the adapter does to its transport; ends like asyncio's (connection_lost soon)."""

    def __init__(self, name: str, log: list[str], protocol: asyncio.Protocol) -> None:
        self.name = name
        self.log = log
        self.protocol = protocol
        self.closed = False

    def write(self, data: bytes) -> None:
        self.log.append(f"{self.name} {show(data)}")

    def pause_reading(self) -> None:
        self.log.append(f"{self.name} pause")

    def resume_reading(self) -> None:
        self.log.append(f"{self.name} resume")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.log.append(f"{self.name} close")
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    abort = close

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


class FakePool(UpstreamPool):
    """The real pool's decisions; connecting makes a recorded upstream ``upN`` (no socket)."""

    def __init__(self, log: list[str], refuse: bool, hold: bool) -> None:
        super().__init__(cast(Any, None), lambda: "test.local", 1.0, 60.0, 8, 65536)
        self.log = log
        self.refuse = refuse
        self.hold = hold
        self.upstreams: dict[str, UpstreamConnection] = {}
        self.names: dict[int, str] = {}
        self.gates: dict[str, asyncio.Future[None]] = {}

    async def connect(self, target: UpstreamTarget) -> UpstreamConnection:
        name = f"up{len(self.upstreams) + len(self.gates) + 1}"
        self.log.append(f"connect {name}")
        if self.refuse:
            raise UpstreamError("upstream_connect", f"{target}: connection refused")
        if self.hold:
            gate = self.gates[name] = asyncio.get_running_loop().create_future()
            await gate
            del self.gates[name]
        conn = UpstreamConnection(self, target)
        conn.connection_made(cast(asyncio.Transport, FakeTransport(name, self.log, conn)))
        self.upstreams[name] = conn
        self.names[id(conn)] = name
        return conn

    def take_idle(self, target: UpstreamTarget) -> UpstreamConnection | None:
        conn = super().take_idle(target)
        if conn is not None:
            self.log.append(f"reuse {self.names[id(conn)]}")
        return conn

    def release(self, conn: UpstreamConnection, now: float) -> None:
        self.log.append(f"release {self.names[id(conn)]}")
        super().release(conn, now)


class _Sidecar:
    """What the adapters read of a sidecar: options, stats, the pool."""

    def __init__(self, options: SidecarOptions, pool: FakePool) -> None:
        self.options = options
        self.stats = ProxyStats()
        self.pool = pool
        self.trust_domain = "test.local"


def _handler(chain: CompiledChain) -> Any:
    async def handle(ex: Exchange) -> None:
        head = ex.head
        headers = clean_request_headers(head.headers, head.connection)
        ctx = RequestContext(
            request_id=ex.request_id,
            direction="inbound",
            peer=Peer("127.0.0.1", 40000),
            method=head.method,
            path=head.target,
            query="",
            host=headers.get("host", ""),
            headers=headers,
            destination_port=80,
            start=ex.start,
        )
        ex.ctx = ctx
        ex.chain = chain
        if chain.body and head.has_body and any(f.wants_request_body(ctx) for f in chain.body):
            ctx.body = await ex.read_body(ex.options.max_buffered_body)
        for f in chain.requests:
            denial = await f.on_request(ctx)
            if denial is not None:
                ex.deny(denial)
                return
        body = ctx.body if ctx.body_rewritten else None
        lines = [f"{head.method} {head.target} HTTP/1.1\r\n", *field_lines(ex, ctx, _SKIP, body)]
        if head.upgrade:
            lines.append(f"connection: upgrade\r\nupgrade: {headers.get('upgrade', '')}\r\n")
        lines.append("\r\n")
        await ex.forward(TARGET, "".join(lines).encode("latin-1"), body)

    return handle


class Transcript:
    """One client connection through a sidecar side, with recorded transports."""

    def __init__(
        self,
        filters: Sequence[Filter] = (),
        options: SidecarOptions | None = None,
        refuse_connect: bool = False,
        hold_connect: bool = False,
        eager: bool = True,
    ) -> None:
        self.log: list[str] = []
        self.options = options or SidecarOptions()
        self.pool = FakePool(self.log, refuse_connect, hold_connect)
        self.sidecar = _Sidecar(self.options, self.pool)
        side = Side("inbound", cast(Sidecar, self.sidecar), _handler(CompiledChain(filters)), eager)
        self.conn = DownstreamConnection(side)
        self.client = FakeTransport("client", self.log, self.conn)
        self.conn.connection_made(cast(asyncio.Transport, self.client))
        self.t0 = self.conn.session.loop.time()

    @property
    def stats(self) -> ProxyStats:
        return self.sidecar.stats

    async def feed(self, who: str, what: str) -> None:
        if who == "client":
            if what == "lost":
                self.client.closed = True
                self.conn.connection_lost(None)
            elif what == "slow":
                self.conn.pause_writing()
            elif what == "drained":
                self.conn.resume_writing()
            else:
                self.conn.data_received(wire(what))
        elif who == "sweep":
            self.conn.session.check_timeouts(self.t0 + float(what))
        elif what == "connected":
            self.pool.gates[who].set_result(None)
        else:
            up = self.pool.upstreams[who]
            if what == "eof":
                up.eof_received()
                up.connection_lost(None)
            elif what == "reset":
                up.connection_lost(ConnectionResetError("reset by peer"))
            else:
                up.data_received(wire(what))
        for _ in range(4):  # let Tasks (a waiting handler, a replay) run
            await asyncio.sleep(0)


def _matches(expected: list[str], actual: list[str]) -> list[str]:
    """``expected`` with each ``...`` line replaced by the actual line it matches."""
    out = []
    for i, line in enumerate(expected):
        got = actual[i] if i < len(actual) else None
        if line.endswith("...") and got is not None and got.startswith(line[:-3]):
            out.append(got)
        else:
            out.append(line)
    return out


def play(script: str, **kwargs: Any) -> Transcript:
    """Run ``script`` (see the module docstring) and assert that every action happened as written."""

    async def run() -> Transcript:
        t = Transcript(**kwargs)
        expected: list[str] = []
        actual: list[str] = []
        for raw in script.strip().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            expected.append(line)
            if line.startswith(">>"):
                actual.append(line)
                who, _, what = line[2:].strip().partition(" ")
                t.log.clear()
                await t.feed(who, what)
                actual.extend(f"<< {entry}" for entry in t.log)
        t.log.clear()
        await asyncio.sleep(0)
        actual.extend(f"<< {entry}" for entry in t.log)  # what the last event caused later
        want = _matches(expected, actual)
        if actual != want:
            diff = difflib.unified_diff(want, actual, "expected", "actual", lineterm="", n=20)
            raise AssertionError("transcript differs:\n" + "\n".join(diff))
        return t

    return asyncio.run(run())
