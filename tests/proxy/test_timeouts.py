"""Slow or silent clients are cut off: slow head (408), stalled body (408), idle keep-alive."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
import uvloop

from meshward.config.snapshot import MeshSnapshot
from meshward.filters.base import Filter, RequestContext, SidecarRuntime
from meshward.proxy import Sidecar, SidecarOptions
from tests.proxy.conftest import RecordingApp
from tests.support.sidecar import issue_svid, make_snapshot

pytestmark = pytest.mark.e2e


class WantsBody(Filter):
    name = "wants-body"

    def wants_request_body(self, ctx: RequestContext) -> bool:
        return True


def _chain(snapshot: MeshSnapshot, runtime: SidecarRuntime) -> Sequence[Filter]:
    return [WantsBody()]


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 15)  # until the sidecar closes


def test_slow_and_silent_clients(app: RecordingApp, tmp_path: Path) -> None:
    svid = issue_svid(tmp_path / "svid", "llm/chat")

    async def main() -> None:
        opts = SidecarOptions(
            app=("127.0.0.1", app.port),
            mtls_mode="PERMISSIVE",
            header_timeout=1,
            stream_idle_timeout=1,
            idle_timeout=1,
        )
        sidecar = Sidecar(opts, chain_factory=_chain)
        sidecar.set_identity(svid.cert.read_bytes(), svid.key.read_bytes(), svid.bundle.read_bytes())
        sidecar.set_snapshot(make_snapshot("llm/chat", mesh={"defaultPolicy": "allow"}))
        await sidecar.start()
        host, port = sidecar.inbound_address
        before = app.count()
        try:

            async def slow_head() -> bytes:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(b"GET /slow HTTP/1.1\r\nHost: chat")  # ... and never the rest
                return await _read_all(reader)

            async def stalled_body() -> bytes:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(b"POST /stall HTTP/1.1\r\nHost: chat\r\nContent-Length: 100\r\n\r\nonly-a-part")
                return await _read_all(reader)

            async def idle() -> bytes:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(b"GET /idle HTTP/1.1\r\nHost: chat\r\n\r\n")
                return await _read_all(reader)  # the answer, then the idle connection is closed

            head, body, kept = await asyncio.gather(slow_head(), stalled_body(), idle())
        finally:
            await sidecar.stop()
        assert head.startswith(b"HTTP/1.1 408") and b"request head not received in time" in head
        assert body.startswith(b"HTTP/1.1 408") and b"request not received in time" in body
        assert kept.startswith(b"HTTP/1.1 200") and kept.count(b"HTTP/1.1") == 1
        assert app.count() == before + 1  # only /idle reached the app

    uvloop.run(main())
