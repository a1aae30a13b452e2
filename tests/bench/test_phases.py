"""bench.phases: profile entries go to the phase of their module; C functions and the standard
library follow their callers; what no frame accounts for is the 'outside' phase."""

from __future__ import annotations

import cProfile
import json
import time
from pathlib import Path

import pytest

from bench.phases import OUTSIDE, aggregate, phase_of, profile_phases, sampled_phases

SITE = "/work/.venv/lib/python3.11/site-packages"
STDLIB = "/usr/lib/python3.11"


@pytest.mark.parametrize(
    ("func", "phase"),
    [
        (("/r/meshward/http/parser.py", 10, "feed"), "HTTP parsing and heads (meshward.http, httptools)"),
        (
            ("~", 0, "<method 'feed_data' of 'httptools.parser.parser.HttpParser' objects>"),
            "HTTP parsing and heads (meshward.http, httptools)",
        ),
        (("~", 0, "<method 'write' of '_ssl._SSLSocket' objects>"), "TLS (ssl module calls)"),
        (("/r/meshward/proxy/downstream.py", 5, "data_received"), "downstream connection (read, dispatch)"),
        (("/r/meshward/proxy/upstream.py", 5, "acquire"), "upstream connection (pool, write, read)"),
        (("/r/meshward/proxy/response.py", 5, "on_head"), "response relay"),
        (("/r/meshward/proxy/exchange.py", 5, "start"), "exchange (routing, head build, filter driving)"),
        (("/r/meshward/filters/authz.py", 5, "on_request"), "authz"),
        (("/r/meshward/authz/engine.py", 5, "evaluate"), "authz"),
        (("<authz-policies>", 1, "_c413"), "authz"),
        (("/r/meshward/telemetry/filter.py", 5, "record"), "telemetry and audit"),
        (("/r/meshward/proxy/session.py", 5, "uncork"), "downstream connection (read, dispatch)"),
        (("/r/meshward/audit/spool.py", 5, "append"), "telemetry and audit"),
        ((f"{SITE}/prometheus_client/metrics.py", 5, "inc"), "telemetry and audit"),
        (("/r/meshward/dlp/scanner.py", 5, "scan"), "DLP"),
        (("/r/meshward/filters/ratelimit.py", 5, "admit"), "ratelimit / token budget"),
        ((f"{STDLIB}/asyncio/events.py", 5, "_run"), "event loop (asyncio/uvloop calls)"),
        ((f"{STDLIB}/json/encoder.py", 5, "encode"), "(caller's phase)"),
        (("~", 0, "<built-in method builtins.len>"), "(caller's phase)"),
    ],
)
def test_phase_of(func: tuple[str, int, str], phase: str) -> None:
    assert phase_of(func) == phase


def test_c_functions_and_stdlib_follow_their_callers() -> None:
    authz = ("/r/meshward/authz/engine.py", 1, "evaluate")
    tele = ("/r/meshward/telemetry/filter.py", 1, "record")
    dumps = (f"{STDLIB}/json/__init__.py", 1, "dumps")
    length = ("~", 0, "<built-in method builtins.len>")
    stats = {
        authz: (1, 1, 2.0, 3.0, {}),
        tele: (1, 1, 1.0, 4.0, {}),
        dumps: (1, 1, 3.0, 3.0, {tele: (1, 1, 3.0, 3.0)}),  # json for telemetry only
        length: (4, 4, 1.0, 1.0, {authz: (3, 3, 0.75, 0.75), dumps: (1, 1, 0.25, 0.25)}),
    }
    assert aggregate(stats) == pytest.approx({"authz": 2.75, "telemetry and audit": 4.25})


def test_a_caller_cycle_of_c_functions_ends() -> None:
    a, b = ("~", 0, "<a>"), ("~", 0, "<b>")
    stats = {a: (1, 1, 1.0, 1.0, {b: (1, 1, 1.0, 1.0)}), b: (1, 1, 1.0, 1.0, {a: (1, 1, 1.0, 1.0)})}
    assert sum(aggregate(stats).values()) == pytest.approx(2.0)


def _work() -> None:
    for _ in range(200):
        json.dumps({"k": list(range(50))})
    deadline = time.process_time() + 0.01
    while time.process_time() < deadline:
        pass


def test_profile_phases_from_a_real_profile(tmp_path: Path) -> None:
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    _work()
    profiler.disable()
    out = tmp_path / "p.prof"
    profiler.dump_stats(out)
    res = profile_phases(out, requests=100, process_cpu=10.0)  # far more CPU than the frames saw
    shares = {p["phase"]: p["share_pct"] for p in res["phases"]}
    assert res["phases"][0]["phase"] == OUTSIDE and shares[OUTSIDE] > 95
    assert sum(shares.values()) == pytest.approx(100, abs=0.5)
    assert res["us_per_request_total"] == pytest.approx(1e5, rel=0.01)  # 10 s over 100 requests
    assert any("_work" in f["function"] or "dumps" in f["function"] for f in res["functions"])


ROOT_FRAMES = "_run_module_as_main (<frozen runpy>:198);run_forever (loop.c:33397);uv_run (core.c:464)"
RAW = "\n".join(
    [
        f"{ROOT_FRAMES};uv__io_poll (linux.c:1452);epoll_pwait (libc.so.6) 50",  # the loop waits: idle
        "Thread.run (threading.py:982);AccessLog._run (meshward/telemetry/accesslog.py:179);"
        "Event.wait (threading.py:629);lock_PyThread_acquire_lock (libpython3.11.so.1.0);0x7f16 (libc.so.6) 40",
        f"{ROOT_FRAMES};DownstreamConnection.data_received (meshward/proxy/downstream.py:140);"
        "pthread_cond_wait (libc.so.6);0x7ff3 (libc.so.6) 5",  # waiting for the GIL
        f"{ROOT_FRAMES};UpstreamConnection.write (meshward/proxy/upstream.py:164);"
        "uv_try_write (stream.c:1);write (libc.so.6) 30",
        f"{ROOT_FRAMES};SSLProtocol__do_read (loop.c:160535);SSL_read_ex (libssl.so.3);read (libc.so.6) 10",
        f"{ROOT_FRAMES};SSLProtocol__do_read (loop.c:160535);SSL_read_ex (libssl.so.3);0x7ff3 (libcrypto.so.3) 20",
        f"{ROOT_FRAMES};ResponseParser.feed (meshward/http/parser.py:326);llhttp__internal_execute (llhttp.c:1) 8",
        f"{ROOT_FRAMES};AuthzFilter.on_request (meshward/filters/authz.py:90);_c413 (<authz-policies>:15);"
        "Py_DECREF (object.h:537) 12",
        f"{ROOT_FRAMES};handle_inbound (meshward/proxy/inbound.py:76);dict_get (libpython3.11.so.1.0) 15",
        f"{ROOT_FRAMES};loop_run_in_context1 (loop.c:14713) 5",
        "not a sample line",
    ]
)


def test_sampled_phases_from_py_spy_raw_stacks() -> None:
    res = sampled_phases(RAW, user_us=120.0, system_us=20.0)
    assert (res["samples_idle"], res["samples_gil_wait"], res["samples_cpu"]) == (90, 5, 100)
    got = [(p["phase"], p["samples"], p["us_per_request"]) for p in res["phases"]]
    assert got == [  # syscalls share the system CPU (40 samples), the rest the user CPU (60)
        ("TLS (libssl, libcrypto, uvloop SSL protocol)", 20, 40.0),
        ("downstream connection (read, dispatch)", 15, 30.0),  # inbound.py, C below it
        ("authz", 12, 24.0),  # the compiled policies
        ("HTTP parsing and heads (meshward.http, httptools)", 8, 16.0),
        ("syscalls: socket writes (loopback TCP: the receiver's kernel work too)", 30, 15.0),
        ("interpreter and event loop (no phase named)", 5, 10.0),
        ("syscalls: socket reads", 10, 5.0),
    ]
    assert sum(p["share_pct"] for p in res["phases"]) == pytest.approx(100)


def test_sampled_phases_without_cpu_figures_give_shares_only() -> None:
    res = sampled_phases(RAW)
    assert all("us_per_request" not in p for p in res["phases"])
    assert res["phases"][0] == {
        "phase": "syscalls: socket writes (loopback TCP: the receiver's kernel work too)",
        "samples": 30,
        "share_pct": 30.0,
    }
