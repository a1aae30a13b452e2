"""bench.core and bench.forwarder: the bare forwarder really forwards over mTLS with keep-alive,
and the headline rows (value, target, met) come out of a run's figures as the report expects."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest

from bench.core import FLOOR, WORKERS_SETUP, profile_tables, rows, start_forwarder_pair
from bench.report import AreaRun, Machine, render, targets
from tests.support.models import example_model
from tests.support.sidecar import issue_svid


def _chat(text: str) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()


@pytest.mark.e2e
def test_bare_forwarder_pair_forwards_over_mtls_with_keep_alive(tmp_path: Path) -> None:
    with example_model(tmp_path, "examples.models.chat", "--echo") as model:
        pair = start_forwarder_pair(tmp_path, model)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", pair.port, timeout=10)
            conn.connect()
            first = conn.sock
            for text in ("first prompt", "second prompt"):
                conn.request(
                    "POST", "/v1/chat/completions", _chat(text), {"content-type": "application/json"}
                )
                resp = conn.getresponse()
                answer = json.loads(resp.read())
                assert resp.status == 200 and answer["choices"][0]["message"]["content"] == text
            body = _chat("a chunked prompt")
            conn.request(
                "POST",
                "/v1/chat/completions",
                iter([body[:7], body[7:]]),
                {"content-type": "application/json"},
                encode_chunked=True,
            )
            resp = conn.getresponse()
            assert json.loads(resp.read())["choices"][0]["message"]["content"] == "a chunked prompt"
            assert conn.sock is first  # one keep-alive connection carried all three
            conn.close()
        finally:
            pair.stop()


def _answer(port: int, wrap: ssl.SSLContext | None) -> bytes:
    """What the server side sends back to one GET (b"" when it refuses)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            sock = wrap.wrap_socket(raw) if wrap is not None else raw
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            return sock.recv(100)
        except (ssl.SSLError, OSError):
            return b""


@pytest.mark.e2e
def test_bare_forwarder_server_side_requires_a_mesh_client_certificate(tmp_path: Path) -> None:
    with example_model(tmp_path, "examples.models.chat") as model:
        pair = start_forwarder_pair(tmp_path, model)
        try:
            svid = issue_svid(tmp_path / "caller", "bench/client")
            anonymous = ssl.create_default_context(cafile=str(svid.bundle))
            anonymous.check_hostname = False
            with_cert = ssl.create_default_context(cafile=str(svid.bundle))
            with_cert.check_hostname = False
            with_cert.load_cert_chain(svid.cert, svid.key)
            assert _answer(pair.inner_port, with_cert).startswith(b"HTTP/1.1 200")
            assert _answer(pair.inner_port, anonymous) == b""  # no certificate: no answer
            assert _answer(pair.inner_port, None) == b""  # plain HTTP on the mTLS side
        finally:
            pair.stop()


def _tp(rps: float, client: float = 0.05, server: float = 0.06) -> dict[str, Any]:
    return {"rps": rps, "cpu_s_per_1k_client": client, "cpu_s_per_1k_server": server}


def _figures(mw_b: float) -> dict[str, Any]:
    names = ("haproxy", "forwarder", "mw_a", "mw_b", "mw_c", WORKERS_SETUP)
    rps = {"haproxy": 10_000.0, "forwarder": 6_000.0, "mw_a": 5_500.0, "mw_b": mw_b, "mw_c": 3_000.0}
    rps[WORKERS_SETUP] = 7_000.0
    return {
        "throughput": {"direct": _tp(30_000.0), **{n: _tp(rps[n]) for n in names}},
        "rate_1000": {
            n: {"p50_ms": 0.4 + i / 10, "p99_ms": 1.0 + i / 10} for i, n in enumerate(("direct", *names))
        },
        "rss_mb": {n: {"client": [30.0], "server": [35.0]} for n in names[:-1]}
        | {WORKERS_SETUP: {"client": [20.0, 41.0, 42.0], "server": [20.0, 43.0, 44.0]}},
    }


@pytest.mark.parametrize(
    ("mw_b", "floor_met", "goal_met"),
    [(5_000.0, True, False), (4_000.0, False, False), (6_000.0, True, True)],
)
def test_rows_give_ratios_to_haproxy_with_floor_and_goal(
    mw_b: float, floor_met: bool, goal_met: bool
) -> None:
    by_name = {r["name"]: r for r in rows(_figures(mw_b))}
    floor = by_name["ratio (b) 100 authz + telemetry + audit / haproxy"]
    assert (
        floor["value"] == mw_b / 10_000
        and floor["target"] == f">= {FLOOR} (floor)"
        and floor["met"] is floor_met
    )
    assert by_name["ratio (b) / haproxy, goal: the bare forwarder's ratio"]["met"] is goal_met
    assert by_name["ratio bare forwarder / haproxy (the Python ceiling)"]["value"] == 0.6
    added = by_name["added p50 at 1,000 req/s (b)"]
    assert added["value"] == pytest.approx(0.4) and added["met"] is True  # mw_b is 4th: 0.8 - 0.4
    assert by_name["CPU-s per 1,000 requests per sidecar (b) (max of pair)"]["value"] == 0.06
    assert by_name["RSS per sidecar (b) (max of pair)"]["met"] is True
    assert by_name["RSS per worker process, (b) 2 workers (max)"]["value"] == 44.0  # workers, not the parent


def test_rows_and_profile_render_in_the_report() -> None:
    prof = {
        "us_per_request_total": 120.0,
        "profiled_rps": 4000.0,
        "phases": [{"phase": "authz", "us_per_request": 10.0, "share_pct": 8.3}],
        "modules": [{"module": "meshward.authz.engine", "us_per_request": 10.0, "share_pct": 8.3}],
        "functions": [
            {"function": "evaluate (engine.py:1)", "calls_per_request": 1.0, "us_per_request": 10.0}
        ],
    }
    sampled = {
        "sampled_rps": 3900.0,
        "user_us_per_request": 110.0,
        "system_us_per_request": 40.0,
        "phases": [{"phase": "TLS", "samples": 30, "share_pct": 30.0, "us_per_request": 45.0}],
    }
    tables = profile_tables(sampled, prof, 150.0)
    result = {"results": rows(_figures(5_000.0)), "tables": tables, "profile": prof, "sampled": sampled}
    assert "phases" not in prof and "phases" not in sampled  # moved into the tables, not repeated
    run = AreaRun("core", "ok", ".venv/bin/python -m bench.core", "2026-12-07 05:00 UTC", 90.0, result)
    text = render(Machine(2, "cpu", "1 GiB", "6", "3.11"), [run], "now", "cmd")
    assert (
        "| ratio (b) 100 authz + telemetry + audit / haproxy | 0.5 | x | >= 0.5 (floor) | **met** |" in text
    )
    assert (
        "by phase: py-spy" in text and "its 40.0 µs of system CPU" in text and "its 110.0 µs of user" in text
    )
    assert "| phase | samples | share_pct | us_per_request |" in text and "| TLS | 30 | 30 | 45 |" in text
    assert "| evaluate (engine.py:1) | 1 | 10 |" in text  # cProfile's functions, always
    assert "cProfile over-weights Python" not in text  # its phases only when py-spy did not run

    listed = [row[1] for row in targets([run])]
    assert listed == [
        "ratio (b) 100 authz + telemetry + audit / haproxy",
        "ratio (b) / haproxy, goal: the bare forwarder's ratio",
        "added p50 at 1,000 req/s (b)",
        "added p99 at 1,000 req/s (b)",
        "CPU-s per 1,000 requests per sidecar (b) (max of pair)",
        "RSS per sidecar (b) (max of pair)",
    ]


def test_without_samples_the_cprofile_phases_are_shown_with_an_estimate() -> None:
    prof = {
        "phases": [{"phase": "authz", "us_per_request": 10.0, "share_pct": 25.0}],
        "modules": [],
        "functions": [],
    }
    tables = profile_tables({"skipped": "no index"}, prof, 200.0)
    (title, phases), *_ = tables.items()
    assert "py-spy did not run" in title and phases[0]["est_us_unprofiled"] == 50.0
