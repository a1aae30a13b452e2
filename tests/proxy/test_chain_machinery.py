"""The inbound chain machinery with small contract-level filters, in-process over real sockets.

The real filters (authz, ratelimit, dlp, telemetry) have their own tests; here the sidecar is
given ``chain_factory`` filters that exercise each hook of the contract: a Denial and its one
mapping, body buffering (100-continue answered locally, 413 above the bound), a rewritten body
re-framed, a rewritten response re-chunked, StreamAbort, and on_complete for every filter.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop

from meshward.config.snapshot import MeshSnapshot, ServiceEntry
from meshward.filters.base import (
    Denial,
    Filter,
    RequestContext,
    ResponseDenied,
    SidecarRuntime,
    StreamAbort,
)
from meshward.proxy import Sidecar, SidecarOptions
from tests.proxy.conftest import RecordingApp
from tests.support.sidecar import issue_svid, make_snapshot

pytestmark = pytest.mark.e2e


class Deny(Filter):
    name = "deny"

    async def on_request(self, ctx: RequestContext) -> Denial | None:
        if ctx.path == "/deny":
            return Denial(
                "authz",
                0,
                "caller may not do this",
                policy="llm/only-admins",
                headers=[("x-denied-by", "test"), ("x-split", "a\r\nset-cookie: evil=1")],
                body={"policy": "llm/only-admins"},
            )
        # a careless filter tries to add a header that would split the request head
        ctx.headers["x-split"] = "a\r\nx-injected: 1"
        return None


class Body(Filter):
    name = "body"

    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen

    def wants_request_body(self, ctx: RequestContext) -> bool:
        return ctx.path.startswith("/v1/") or ctx.path.startswith("/body")

    async def on_request(self, ctx: RequestContext) -> Denial | None:
        self.seen.append((ctx.path, ctx.body, ctx.ai.model))
        if ctx.path == "/body/rewrite" and ctx.body is not None:
            ctx.body = ctx.body.upper() + b"!"
            ctx.body_rewritten = True
        return None


class Upper(Filter):
    name = "upper"

    def on_response_headers(self, ctx: RequestContext, status: int, headers: list[tuple[str, str]]) -> bool:
        headers.append(("x-upper", "yes"))
        headers.append(("x-split", "a\r\nx-injected: 1"))
        return ctx.path == "/upper"

    def on_response_chunk(self, ctx: RequestContext, chunk: bytes) -> bytes:
        return chunk.upper() if ctx.path == "/upper" else chunk


class Cut(Filter):
    name = "cut"

    def on_response_headers(self, ctx: RequestContext, status: int, headers: list[tuple[str, str]]) -> bool:
        return ctx.path == "/v1/chat/completions"  # may cut: the body must be re-framed (chunked)

    def on_response_chunk(self, ctx: RequestContext, chunk: bytes) -> bytes:
        if ctx.path == "/v1/chat/completions" and chunk.startswith(b"data:") and b"mesh" in chunk:
            raise StreamAbort(b"data: [cut]\n\n", "test cut")
        return chunk


class Refuse(Filter):
    """Refuses a response before its head (``/refuse/head``) or after holding its body whole."""

    name = "refuse"

    def on_response_headers(self, ctx: RequestContext, status: int, headers: list[tuple[str, str]]) -> bool:
        if ctx.path == "/refuse/head":
            raise ResponseDenied(Denial("export", 403, "too much", policy="llm/export", rule="max"))
        return ctx.path == "/refuse/end"

    def on_response_chunk(self, ctx: RequestContext, chunk: bytes) -> bytes:
        if ctx.path == "/refuse/end":
            ctx.scratch.setdefault("held", []).append(chunk)
            return b""
        return chunk

    def on_response_end(self, ctx: RequestContext) -> bytes:
        if ctx.path == "/refuse/end":
            raise ResponseDenied(Denial("dlp", 403, "not this", policy="llm/pii"), b"[cut]", "test")
        return b""


class Record(Filter):
    name = "record"

    def __init__(self, done: list[tuple[str, int, str, str]]) -> None:
        self.done = done

    def on_complete(self, ctx: RequestContext) -> None:
        self.done.append((ctx.path, ctx.response_status, ctx.decision, ctx.response_flags))


async def _parts(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


def test_chain_hooks_end_to_end(app: RecordingApp, tmp_path: Path) -> None:
    seen: list[Any] = []
    done: list[tuple[str, int, str, str]] = []

    def chain(snapshot: MeshSnapshot, runtime: SidecarRuntime) -> Sequence[Filter]:
        return [Deny(), Body(seen), Cut(), Upper(), Refuse(), Record(done)]

    svid = issue_svid(tmp_path / "svid", "llm/chat")

    async def main() -> None:
        opts = SidecarOptions(app=("127.0.0.1", app.port), max_buffered_body=10_000, mtls_mode="PERMISSIVE")
        sidecar = Sidecar(opts, chain_factory=chain)
        sidecar.set_identity(svid.cert.read_bytes(), svid.key.read_bytes(), svid.bundle.read_bytes())
        sidecar.set_snapshot(make_snapshot("llm/chat", mesh={"defaultPolicy": "allow"}))
        await sidecar.start()
        base = "http://{}:{}".format(*sidecar.inbound_address)
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10, trust_env=False) as c:
                # a Denial: the one mapping (status from the kind, JSON body + extra fields, headers)
                before = app.count()
                r = await c.get("/deny")
                assert r.status_code == 403 and r.headers["x-denied-by"] == "test"
                assert "set-cookie" not in r.headers and "x-split" not in r.headers
                doc = r.json()
                assert doc["error"] == "caller may not do this" and doc["policy"] == "llm/only-admins"
                assert doc["request_id"] == r.headers["x-request-id"]
                assert app.count() == before

                # the body is buffered for the filter, then re-classified with it (model known)
                r = await c.post("/v1/chat/completions", json={"model": "tiny", "messages": []})
                assert r.status_code == 200
                assert seen[-1][0] == "/v1/chat/completions" and seen[-1][2] == "tiny"

                # a rewritten body is re-framed with its new length
                r = await c.post("/body/rewrite", content=_parts(b"abc", b"def"))  # sent chunked
                echo = r.json()
                assert "x-injected" not in echo["headers"] and "x-split" not in echo["headers"]
                assert echo["body_len"] == 7
                assert echo["body_sha256"] == hashlib.sha256(b"ABCDEF!").hexdigest()

                # above the buffer bound: 413, nothing forwarded
                before = app.count()
                r = await c.post("/body/big", content=b"x" * 20_000)
                assert r.status_code == 413 and app.count() == before

                # a response filter that rewrites: Content-Length dropped, chunked, transformed
                r = await c.get("/upper")
                assert r.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.headers
                assert r.headers["x-upper"] == "yes"
                assert "x-injected" not in r.headers and "x-split" not in r.headers
                assert json.loads(r.content)["METHOD"] == "GET"

                # StreamAbort: the tail is written and the stream ends cleanly
                async with c.stream(
                    "POST", "/v1/chat/completions", json={"model": "tiny", "stream": True, "messages": []}
                ) as s:
                    text = (await s.aread()).decode()
                assert "Hello" in text and text.endswith("data: [cut]\n\n") and "[DONE]" not in text

                # ResponseDenied: the denial's response instead of the app's (which was called),
                # before the head or after the whole body was held; the connection stays usable
                for path in ("/refuse/head", "/refuse/end"):
                    before = app.count()
                    r = await c.get(path)
                    assert r.status_code == 403 and r.json()["error"] in ("too much", "not this")
                    assert r.headers["content-type"] == "application/json" and "x-upper" not in r.headers
                    assert app.count() == before + 1
                    assert b"METHOD" not in r.content and b"[cut]" not in r.content
                    assert (await c.get("/upper")).status_code == 200
                    assert [d for d in done if d[0] == path] == [(path, 403, "deny", "DLP")]

            # Expect: 100-continue when a filter wants the body: the sidecar answers 100 itself
            host, port = sidecar.inbound_address
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                b"POST /body/expect HTTP/1.1\r\nHost: chat.llm\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
            )
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 100")
            writer.write(b"ping")
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 200")
            writer.close()
            assert seen[-1][:2] == ("/body/expect", b"ping")
        finally:
            await sidecar.stop()

    uvloop.run(main())
    # on_complete ran for every exchange, the denied and the too large included
    by_path = {path: (status, decision, flags) for path, status, decision, flags in done}
    assert by_path["/deny"] == (403, "deny", "RBAC")
    assert by_path["/body/big"][0] == 413
    assert by_path["/upper"][0] == 200
    assert by_path["/body/expect"][0] == 200


def test_outbound_traffic_policy(app: RecordingApp, tmp_path: Path) -> None:
    """REGISTRY_ONLY (default): unknown hosts get 403 naming the host; ALLOW_ANY passes them through; a
    known service without serving sidecars is 503."""
    svid = issue_svid(tmp_path / "svid", "web/webapp")

    async def main() -> None:
        sidecar = Sidecar()
        sidecar.set_identity(svid.cert.read_bytes(), svid.key.read_bytes(), svid.bundle.read_bytes())
        empty = ServiceEntry("chat", "llm", (), ("spiffe://demo.local/ns/llm/sa/chat",))
        sidecar.set_snapshot(make_snapshot("web/webapp", services=[empty]))
        await sidecar.start()
        proxy = "http://{}:{}".format(*sidecar.outbound_address)
        try:
            async with httpx.AsyncClient(proxy=proxy, timeout=10, trust_env=False) as c:
                r = await c.get(f"http://127.0.0.1:{app.port}/external")
                doc = r.json()
                assert (
                    r.status_code == 403 and doc["host"] == "127.0.0.1" and doc["reason"] == "not_registered"
                )
                r = await c.get("http://chat.llm/x")  # known service, nobody serving it
                assert r.status_code == 503 and r.json()["error"].startswith("no healthy upstream")
                sidecar.set_snapshot(
                    make_snapshot(
                        "web/webapp", mesh={"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}, generation=2
                    )
                )
                r = await c.get(f"http://127.0.0.1:{app.port}/external")
                assert r.status_code == 200 and r.json()["path"] == "/external"
        finally:
            await sidecar.stop()

    uvloop.run(main())
