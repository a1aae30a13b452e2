"""Telemetry and audit cost: ``.venv/bin/python -m bench.telemetry``.

In process, per finished request (µs, best of 5 runs of N requests, timer outside the loop):

- ``trace``:      W3C trace context for the hop (parse the incoming header, new span id);
- ``metrics``:    Istio-labelled counter + duration histogram (the label tuple included);
- ``access_log``: building the JSON line and queueing it (the writer thread is not timed);
- ``audit``:      the OCSF HTTP Activity record, hash-chained and written to the spool;
- ``all``:        the filter's ``record`` as configured by default (what ``on_complete`` costs:
                  metrics, access log; audit only for security-relevant requests, so not here);
- ``all_with_allowed_audit``: the same with ``Mesh.spec.audit.recordAllowed: true``.

Then, when the sidecar is runnable, requests/s through a real client sidecar → server sidecar →
app pair (8 keep-alive connections posting OpenAI-style chat requests to a minimal asyncio app),
side by side in alternating rounds: everything on (metrics, access log to the state directory,
audit of every request, trace context) vs the telemetry filter removed
(``MESHWARD_TELEMETRY=off``). Target: all on ≥ 0.85 of all off.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from bench.common import QUICK, add_pair_row, cpu_seconds
from meshward.audit.ocsf import http_activity
from meshward.filters.base import Peer, RequestContext, SidecarRuntime
from meshward.proxy.pipeline import TelemetryPipeline
from meshward.telemetry.accesslog import access_line
from meshward.telemetry.filter import TelemetryFilter, build
from meshward.telemetry.tracing import TraceContext

__all__ = ["run"]

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _ctx() -> RequestContext:
    ctx = RequestContext(
        request_id="4f1c2b9a8e7d6c5b",
        direction="inbound",
        peer=Peer("127.0.0.1", 51234, "spiffe://bench.local/ns/web/sa/webapp", "web", "webapp"),
        method="POST",
        path="/v1/chat/completions",
        query="",
        host="chat.llm",
        headers={"traceparent": TRACEPARENT, "content-type": "application/json"},
        destination_port=8080,
        start=time.monotonic(),
    )
    ctx.ai.protocol, ctx.ai.operation, ctx.ai.model = "openai", "chat", "gpt-bench"
    ctx.response_status, ctx.bytes_received, ctx.bytes_sent = 200, 180, 420
    ctx.upstream_duration = 0.004
    ctx.policy, ctx.rule = "llm/allow-web", "rules[0]"
    return ctx


def _per_op_us(fn: Callable[[], object], n: int) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return round(best * 1e6, 2)


def bench_in_process(n: int) -> dict[str, float]:
    from tests.support.sidecar import make_snapshot

    with tempfile.TemporaryDirectory(prefix="bench-telemetry-") as tmp:
        snapshot = make_snapshot("llm/chat", trust_domain="bench.local")
        runtime = SidecarRuntime(
            snapshot.workload, "bench.local", state_dir=Path(tmp), metrics_registry=CollectorRegistry()
        )
        pipeline = TelemetryPipeline(runtime)
        pipeline.configure(snapshot)
        flt = build(snapshot, runtime)
        assert isinstance(flt, TelemetryFilter)
        ctx = _ctx()
        ctx.scratch["telemetry.trace"] = TraceContext.for_request(TRACEPARENT)
        assert flt.outputs.access_log is not None and pipeline.spool is not None
        metrics = flt.metrics
        labels = (
            "destination",
            "webapp",
            "web",
            "bench.local/ns/web/sa/webapp",
            "chat",
            "chat.llm",
            "200",
            "mutual_tls",
            "-",
            "gpt-bench",
            "chat",
        )
        log, spool = flt.outputs.access_log, pipeline.spool
        now = time.time()
        dest_json = f'"{flt.destination}"'
        results = {
            "trace_us": _per_op_us(lambda: TraceContext.for_request(TRACEPARENT), n),
            "metrics_us": _per_op_us(lambda: metrics.observe_request(labels, 0.0123), n),
            "access_log_us": _per_op_us(
                lambda: log.write_line(access_line(ctx, dest_json, '"chat.llm"', now, 0.0123)), n
            ),
            "audit_us": _per_op_us(lambda: spool.append(http_activity(ctx, 1, 12)), n),
            "all_us": _per_op_us(lambda: flt.record(ctx, time.monotonic()), n),
        }
        audit_all = make_snapshot(
            "llm/chat", trust_domain="bench.local", mesh={"audit": {"recordAllowed": True}}
        )
        pipeline.configure(audit_all)
        flt_all = build(audit_all, runtime)
        assert isinstance(flt_all, TelemetryFilter) and flt_all.record_allowed
        results["all_with_allowed_audit_us"] = _per_op_us(lambda: flt_all.record(ctx, time.monotonic()), n)
        pipeline.close()
    return results


@contextlib.contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


# A minimal keep-alive HTTP app (asyncio, fixed OpenAI-style answer): the sidecars, not the app,
# should be what limits the throughput measured.
_FAST_APP = r"""
import asyncio, sys
BODY = (b'{"id":"c1","object":"chat.completion","model":"bench","choices":[{"index":0,'
        b'"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}')
RESP = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(BODY), BODY)
async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            writer.write(RESP)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


async def _load(proxy: tuple[str, int], host: str, seconds: float, connections: int) -> int:
    """Keep-alive POSTs through the client sidecar (as an HTTP proxy) for ``seconds``; count them."""
    import asyncio

    body = b'{"model":"bench","messages":[{"role":"user","content":"hello mesh"}],"max_tokens":8}'
    request = (
        b"POST http://%s/v1/chat/completions HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (host.encode(), host.encode(), len(body), body)
    )
    done = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def worker() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(*proxy)
        try:
            while loop.time() < deadline:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"unexpected answer {head[:40]!r}")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                done += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return done


def bench_pair(seconds: float, rounds: int, connections: int = 8) -> dict[str, Any]:
    """Requests/s through a real sidecar pair: telemetry + audit all on vs all off."""
    import asyncio

    from tests.support.proc import PYTHON, free_port, spawn, wait_port
    from tests.support.sidecar import mesh_pair

    with tempfile.TemporaryDirectory(prefix="bench-telemetry-pair-") as tmp:
        tmp_path = Path(tmp)
        port = free_port()
        app = spawn([PYTHON, "-c", _FAST_APP, str(port)], tmp_path / "app.log")
        try:
            wait_port(port)
            with contextlib.ExitStack() as stack:
                with _env("MESHWARD_TELEMETRY", "off"):
                    off = stack.enter_context(
                        mesh_pair(tmp_path, port, default_policy="allow", server_id="llm/chat")
                    )
                on = stack.enter_context(
                    mesh_pair(
                        tmp_path,
                        port,
                        default_policy="allow",
                        server_id="llm/chat",
                        server_options={"state_dir": str(tmp_path / "on-state")},
                    )
                )

                def measure(pair: Any, rps: list[float], cpu: list[float]) -> None:
                    asyncio.run(_load(pair.client.outbound, pair.service_host, 0.5, connections))  # warm up
                    cpu0 = cpu_seconds(pair.server.proc.pid)
                    n = asyncio.run(_load(pair.client.outbound, pair.service_host, seconds, connections))
                    rps.append(n / seconds)
                    cpu.append((cpu_seconds(pair.server.proc.pid) - cpu0) / max(n, 1) * 1e6)

                all_off: list[float] = []
                all_on: list[float] = []
                cpu_off: list[float] = []
                cpu_on: list[float] = []
                for _ in range(rounds):
                    measure(off, all_off, cpu_off)
                    measure(on, all_on, cpu_on)
                access_lines = len((tmp_path / "on-state" / "access.log").read_text().splitlines())
        finally:
            app.stop()
    best_off, best_on = max(all_off), max(all_on)
    # CPU of the server sidecar per request: robust to other load on the machine; its inverse
    # ratio is the throughput ratio of a CPU-bound sidecar.
    cpu_best_off, cpu_best_on = min(cpu_off), min(cpu_on)
    return {
        "all_off_rps": round(best_off, 1),
        "all_on_rps": round(best_on, 1),
        "ratio": round(best_on / best_off, 3),
        "ratio_target": 0.85,
        "met": best_on / best_off >= 0.85,
        "server_cpu_us_per_request_off": round(cpu_best_off, 1),
        "server_cpu_us_per_request_on": round(cpu_best_on, 1),
        "cpu_capacity_ratio": round(cpu_best_off / cpu_best_on, 3),
        "rounds": rounds,
        "seconds_per_round": seconds,
        "connections": connections,
        "access_log_lines_on": access_lines,
    }


def run() -> dict[str, Any]:
    n = 5_000 if QUICK else 20_000
    inproc = bench_in_process(n)
    results: dict[str, Any] = {"in_process": inproc}
    rows = [
        {"name": f"{k.removesuffix('_us')} per request", "value": v, "unit": "µs", "target": "-", "met": True}
        for k, v in inproc.items()
        if k not in ("all_us", "all_with_allowed_audit_us")
    ]
    rows.append(
        {
            "name": "all telemetry + audit per request",
            "value": inproc["all_us"],
            "unit": "µs",
            "target": "< 60",
            "met": inproc["all_us"] < 60,
        }
    )
    rows.append(
        {
            "name": "same + audit record for allowed requests",
            "value": inproc["all_with_allowed_audit_us"],
            "unit": "µs",
            "target": "-",
            "met": True,
        }
    )
    add_pair_row(
        results,
        rows,
        "pair throughput, telemetry+audit on / off",
        ">= 0.85",
        lambda: bench_pair(2.0 if QUICK else 5.0, 2 if QUICK else 3),
    )
    results["results"] = rows
    return results


if __name__ == "__main__":
    out = run()
    for row in out["results"]:
        print(
            f"{row['name']:<45} {row['value']:>10} {row['unit']:<6} target {row['target']:<8} met={row['met']}"
        )
    if "pair" in out:
        p = out["pair"]
        print(f"pair: all off {p['all_off_rps']} req/s, all on {p['all_on_rps']} req/s, ratio {p['ratio']}")
        print(
            f"server sidecar CPU per request: off {p['server_cpu_us_per_request_off']} µs, "
            f"on {p['server_cpu_us_per_request_on']} µs, capacity ratio {p['cpu_capacity_ratio']}"
        )
    else:
        print("pair skipped:", out.get("pair_skipped"))
