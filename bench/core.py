"""The proxy core against its ceiling (issue 14): ``.venv/bin/python -m bench.core``.

Side by side in one run, wrk ``-c 32`` (keep-alive, one wrk thread) against the same nginx
serving a ~1 KB JSON (``bench.proxy``'s upstream); every pair is client side (plain HTTP in) ═mTLS═▶
server side (mTLS in) → nginx, one process each unless said otherwise:

- ``haproxy``   HAProxy 2.6, ``nbthread 1`` (the reference every ratio is taken against);
- ``forwarder`` the bare uvloop + httptools + ssl forwarder of :mod:`bench.forwarder` (the
  Python ceiling: parse, re-emit the head, keep-alive, nothing else);
- ``mw_a``      Meshward, no policy (``defaultPolicy: allow``), telemetry off
  (``MESHWARD_TELEMETRY=off``): the bare core;
- ``mw_b``      Meshward, the default chain: 100 AuthorizationPolicies selecting the server
  (1,000 in the mesh, :func:`bench.authz.build_mesh`), telemetry on (metrics, access log to
  the state directory), audit of denials (the Mesh default);
- ``mw_c``      ``mw_b`` plus a token budget (RateLimitPolicy) and a DataProtectionPolicy
  (``direction: both``, every built-in detector, ``mask``: the 1 KB JSON answer is scanned);
- ``mw_b_w2``   ``mw_b`` with ``meshward proxy --workers 2`` on both sides (reported apart: the
  comparison of record is one worker against HAProxy ``nbthread 1``).

Throughput is the best of ``ROUNDS`` alternating rounds per setup (``DURATION`` s each, after a
1 s warm-up). CPU-seconds per 1,000 requests per sidecar is each proxy process's user+system
time (``/proc``, workers summed) over the throughput round, divided by the requests wrk counted.
Added p50/p99 at 1,000 requests/s: wrk's Lua ``delay()`` paces 10 connections at 10 ms (wrk2 is
not in Debian), the lowest p50 and p99 of ``ROUNDS`` rounds, minus the same straight at nginx.
RSS is read from ``/proc`` after the runs.

Last, what remains per request and where: the ``mw_b`` server sidecar under the same load,
sampled by py-spy with native frames (pinned, in ``.bench/tools-venv``; skipped with the reason
if it cannot be installed) and aggregated by phase (:mod:`bench.phases`), then once more under
cProfile (``MESHWARD_PROFILE``) for the costliest functions and their calls per request.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.authz import build_mesh
from bench.common import QUICK, cpu_seconds, cpu_split, workdir
from bench.phases import profile_phases, sampled_phases
from bench.proxy import ensure_tools, rss_mb, start_haproxy_pair, start_nginx, wrk
from bench.venvs import CACHE, Skip, ensure_venv
from meshward.config.snapshot import ServiceEntry
from tests.support.proc import PYTHON, Proc, free_port, spawn, wait_port
from tests.support.sidecar import issue_svid, make_snapshot, start_sidecar, write_bootstrap

__all__ = ["SETUPS", "Pair", "rows", "run", "start_forwarder_pair", "start_meshward_pair"]

DURATION = 2 if QUICK else 5
ROUNDS = 1 if QUICK else 2
CONCURRENCY = 32
RATE = 1000
RATE_CONNECTIONS = 10
PROFILE_SECONDS = 3 if QUICK else 6
PY_SPY = "py-spy==0.4.3"  # a sampling profiler, in a virtualenv of its own (bench.venvs)
SAMPLE_RATE = 100  # py-spy pauses the process to unwind native stacks: ~half speed at 100/s
SAMPLE_SECONDS = 3 if QUICK else 8
SETUPS = ("haproxy", "forwarder", "mw_a", "mw_b", "mw_c")  # the one-worker comparison
WORKERS_SETUP = "mw_b_w2"
FLOOR, GOAL_P50, GOAL_P99, GOAL_CPU, GOAL_RSS = 0.5, 0.5, 1.0, 0.1, 40.0


@dataclass
class Pair:
    """A running client→server proxy pair: where wrk connects, and each side's processes."""

    port: int
    client_pids: list[int]
    server_pids: list[int]
    procs: list[Proc] = field(default_factory=list)
    inner_port: int = 0  # the server side's (mTLS) listener

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop(timeout=10)


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_forwarder_pair(d: Path, upstream: int) -> Pair:
    """Two :mod:`bench.forwarder` processes: plain in → mTLS → mTLS in → ``upstream``."""
    pair = Pair(0, [], [])
    s_port, c_port = free_port(), free_port()
    try:
        for side, listen, to, flag in (
            ("server", s_port, upstream, "--tls-in"),
            ("client", c_port, s_port, "--tls-out"),
        ):
            svid = issue_svid(d / f"fwd-{side}", f"bench/{'nginx' if side == 'server' else 'client'}")
            args = [PYTHON, "-m", "bench.forwarder", "--listen", f"127.0.0.1:{listen}", "--upstream"]
            args += [f"127.0.0.1:{to}", "--cert", str(svid.cert), "--key", str(svid.key)]
            proc = spawn([*args, "--ca", str(svid.bundle), flag], d / f"fwd-{side}.log")
            pair.procs.append(proc)
            (pair.server_pids if side == "server" else pair.client_pids).append(proc.pid)
            wait_port(listen)
    except BaseException:
        pair.stop()
        raise
    pair.port, pair.inner_port = c_port, s_port
    return pair


def policies_for(setup: str) -> tuple[dict[str, Any], list[Any]]:
    """The Mesh settings and the policies of a Meshward setup (``mw_a`` / ``mw_b`` / ``mw_c``)."""
    if setup == "mw_a":
        return {"defaultPolicy": "allow"}, []
    policies: list[Any] = list(build_mesh("bench", "nginx", open_to="bench/client"))
    if setup == "mw_c":
        policies.append(
            {
                "apiVersion": "meshward.dev/v1alpha1",
                "kind": "RateLimitPolicy",
                "metadata": {"name": "budget", "namespace": "bench"},
                "spec": {
                    "selector": {"matchLabels": {"app": "nginx"}},
                    "limits": [
                        {
                            "name": "tokens",
                            "key": "source.principal",
                            "tokens": {"limit": 1_000_000_000, "per": "minute"},
                        }
                    ],
                },
            }
        )
        policies.append(
            {
                "apiVersion": "meshward.dev/v1alpha1",
                "kind": "DataProtectionPolicy",
                "metadata": {"name": "pii", "namespace": "bench"},
                "spec": {
                    "selector": {"matchLabels": {"app": "nginx"}},
                    "direction": "both",
                    "action": "mask",
                },
            }
        )
    return {}, policies


def _pids(sidecar: Any) -> list[int]:
    return [sidecar.proc.pid, *[int(p) for p in sidecar.ready.get("worker_pids", [])]]


def start_meshward_pair(
    d: Path,
    upstream: int,
    setup: str,
    workers: int = 1,
    profile: Path | None = None,
    policies: tuple[dict[str, Any], list[Any]] | None = None,
    service: str = "nginx",
) -> Pair:
    """A Meshward client sidecar → server sidecar pair in front of ``upstream``.

    ``mw_a`` runs with ``MESHWARD_TELEMETRY=off``; the others keep their access log and audit
    spool in a state directory of their own. ``profile`` turns on the server's cProfile."""
    mesh, docs = policies if policies is not None else policies_for(setup)
    env = {"MESHWARD_TELEMETRY": "off"} if setup == "mw_a" else {}
    pair = Pair(0, [], [])
    try:
        server_svid = issue_svid(d / "server", f"bench/{service}")
        opts = {} if setup == "mw_a" else {"state_dir": str(d / "server-state")}
        server_boot = write_bootstrap(
            d / "server.json",
            server_svid,
            make_snapshot(f"bench/{service}", policies=docs, mesh=mesh),
            app=f"127.0.0.1:{upstream}",
            options=opts,
        )
        server_env = {**env, "MESHWARD_PROFILE": str(profile), "MESHWARD_PURE": "1"} if profile else env
        with _env(**server_env):
            server = start_sidecar(server_boot, f"{setup}-server", workers=workers)
        pair.procs.append(server.proc)
        pair.server_pids = _pids(server)
        entry = ServiceEntry(
            service, "bench", (f"127.0.0.1:{server.inbound_port}",), (server_svid.spiffe_id.uri,)
        )
        client_svid = issue_svid(d / "client", "bench/client")
        copts = {} if setup == "mw_a" else {"state_dir": str(d / "client-state")}
        client_boot = write_bootstrap(
            d / "client.json",
            client_svid,
            make_snapshot("bench/client", services=[entry], mesh=mesh),
            options=copts,
        )
        with _env(**env):
            client = start_sidecar(client_boot, f"{setup}-client", workers=workers)
        pair.procs.append(client.proc)
        pair.client_pids = _pids(client)
        pair.port, pair.inner_port = client.outbound[1], server.inbound_port
    except BaseException:
        pair.stop()
        raise
    return pair


# ---- measuring ---------------------------------------------------------------------------------


def throughput(pair: Pair) -> dict[str, Any]:
    """One ``-c 32`` round: requests/s, latency, and each side's CPU-seconds per 1,000 requests
    (user + system, and the system part alone)."""
    wrk(pair.port, CONCURRENCY, 1)  # warm-up: connections, pools, caches
    before = [cpu_split(pair.client_pids), cpu_split(pair.server_pids)]
    run = wrk(pair.port, CONCURRENCY, DURATION)
    after = [cpu_split(pair.client_pids), cpu_split(pair.server_pids)]
    per = 1000 / max(run["requests"], 1)
    for side, (u0, s0), (u1, s1) in zip(("client", "server"), before, after, strict=True):
        run[f"cpu_s_per_1k_{side}"] = round((u1 - u0 + s1 - s0) * per, 4)
        run[f"sys_s_per_1k_{side}"] = round((s1 - s0) * per, 4)
    return run


def at_rate(port: int, d: Path) -> dict[str, Any]:
    script = d / f"rate{RATE}.lua"
    script.write_text(f"function delay()\n  return {RATE_CONNECTIONS * 1000 // RATE}\nend\n")
    return wrk(port, RATE_CONNECTIONS, DURATION, script)


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    best = dict(max(runs, key=lambda r: r["rps"]))
    best["rounds_rps"] = [r["rps"] for r in runs]
    return best


def _least(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The lowest p50 and the lowest p99 of a setup's paced rounds (noise only adds latency)."""
    least = dict(min(runs, key=lambda r: r["p50_ms"]))
    least["p99_ms"] = min(r["p99_ms"] for r in runs)
    least["rounds_p50_ms"] = [r["p50_ms"] for r in runs]
    least["rounds_p99_ms"] = [r["p99_ms"] for r in runs]
    return least


def measure_all(d: Path) -> dict[str, Any]:
    """Every setup of the module docstring, in one run; the profile last."""
    res: dict[str, Any] = {}
    pairs: dict[str, Pair] = {}
    nginx_procs: list[Proc] = []
    try:
        nginx = start_nginx(d, nginx_procs)
        (d / "hap").mkdir()
        hap_procs: list[Proc] = []
        port, pids = start_haproxy_pair(d / "hap", nginx, hap_procs)
        pairs["haproxy"] = Pair(port, pids[1:], pids[:1], hap_procs)  # [server, client] as started
        pairs["forwarder"] = start_forwarder_pair(d, nginx)
        for setup in ("mw_a", "mw_b", "mw_c"):
            pairs[setup] = start_meshward_pair(d / setup, nginx, setup)
        pairs[WORKERS_SETUP] = start_meshward_pair(d / WORKERS_SETUP, nginx, "mw_b", workers=2)
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in ("direct", *pairs)}
        for _ in range(ROUNDS):
            wrk(nginx, CONCURRENCY, 1)
            rounds["direct"].append(wrk(nginx, CONCURRENCY, DURATION))
            for name, pair in pairs.items():
                rounds[name].append(throughput(pair))
        res["throughput"] = {name: _best(runs) for name, runs in rounds.items()}
        paced: dict[str, list[dict[str, Any]]] = {name: [] for name in ("direct", *SETUPS)}
        for _ in range(ROUNDS):
            paced["direct"].append(at_rate(nginx, d))
            for name in SETUPS:
                paced[name].append(at_rate(pairs[name].port, d))
        res["rate_1000"] = {name: _least(runs) for name, runs in paced.items()}
        res["rss_mb"] = {
            name: {
                "client": [rss_mb(p) for p in pair.client_pids],
                "server": [rss_mb(p) for p in pair.server_pids],
            }
            for name, pair in pairs.items()
        }
        for pair in pairs.values():
            pair.stop()
        pairs.clear()
        server = res["throughput"]["mw_b"]
        system_us = server["sys_s_per_1k_server"] * 1000
        res["sampled"] = sample_server(
            d / "sampled", nginx, server["cpu_s_per_1k_server"] * 1000 - system_us, system_us
        )
        res["profile"] = profile_server(d / "profile", nginx)
    finally:
        for pair in pairs.values():
            pair.stop()
        for p in nginx_procs:
            p.stop()
    return res


def sample_server(d: Path, upstream: int, user_us: float, system_us: float) -> dict[str, Any]:
    """py-spy (native frames) on the ``mw_b`` server sidecar under ``-c 32`` load, by phase; the
    µs per request come from the server's user and system CPU in the throughput run
    (:func:`bench.phases.sampled_phases`)."""
    try:
        spy = ensure_venv(CACHE / "tools-venv", PY_SPY, "py-spy")
    except Skip as exc:
        return {"skipped": str(exc)}
    raw = d / "server.raw"
    pair = start_meshward_pair(d, upstream, "mw_b")
    try:
        wrk(pair.port, CONCURRENCY, 1)
        args = [str(spy), "record", "--pid", str(pair.server_pids[0]), "--duration", str(SAMPLE_SECONDS)]
        args += ["--rate", str(SAMPLE_RATE), "--native", "--format", "raw", "--output", str(raw)]
        spying = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            run = wrk(pair.port, CONCURRENCY, SAMPLE_SECONDS)
            _, err = spying.communicate(timeout=SAMPLE_SECONDS + 60)
        except subprocess.TimeoutExpired:
            return {"skipped": "py-spy did not finish in time"}
        finally:
            if spying.poll() is None:  # wrk failed, or py-spy hangs: stop it too
                spying.kill()
                spying.wait()
    finally:
        pair.stop()
    if not raw.exists():
        return {"skipped": f"py-spy wrote no samples: {err.strip()[-200:]}"}
    res = sampled_phases(raw.read_text(), user_us, system_us)
    res["sampled_rps"] = run["rps"]
    res["user_us_per_request"], res["system_us_per_request"] = round(user_us, 1), round(system_us, 1)
    return res


def profile_server(d: Path, upstream: int) -> dict[str, Any]:
    """cProfile of the ``mw_b`` server sidecar under ``-c 32`` load, by phase (:mod:`bench.phases`)."""
    base = d / "server.prof"
    pair = start_meshward_pair(d, upstream, "mw_b", profile=base)
    try:
        cpu0 = cpu_seconds(pair.server_pids[0])
        warm = wrk(pair.port, CONCURRENCY, 1)
        run = wrk(pair.port, CONCURRENCY, PROFILE_SECONDS)
        cpu = cpu_seconds(pair.server_pids[0]) - cpu0
    finally:
        pair.stop()
    out = base.with_name(f"{base.name}.{pair.server_pids[0]}")
    if not out.exists():
        return {"error": "no profile written (MESHWARD_PROFILE not honoured by this sidecar)"}
    phases = profile_phases(out, warm["requests"] + run["requests"], cpu)
    phases["profiled_rps"] = run["rps"]
    return phases


# ---- the report --------------------------------------------------------------------------------


def _row(
    name: str, value: Any, unit: str, target: str | None = None, met: bool | None = None
) -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, "target": target, "met": met}


def rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline rows (value, target, met) from ``measure_all``'s figures."""
    tp, rate, rss = res["throughput"], res["rate_1000"], res["rss_mb"]
    hap = tp["haproxy"]["rps"]
    ratio = {name: round(tp[name]["rps"] / hap, 3) for name in tp}
    ceiling = ratio["forwarder"]
    out = [
        _row("throughput haproxy pair (-c 32, reference)", tp["haproxy"]["rps"], "req/s"),
        _row("ratio bare forwarder / haproxy (the Python ceiling)", ratio["forwarder"], "x"),
        _row("ratio (a) no policy, no telemetry / haproxy", ratio["mw_a"], "x"),
        _row(
            "ratio (b) 100 authz + telemetry + audit / haproxy",
            ratio["mw_b"],
            "x",
            f">= {FLOOR} (floor)",
            ratio["mw_b"] >= FLOOR,
        ),
        _row(
            "ratio (b) / haproxy, goal: the bare forwarder's ratio",
            ratio["mw_b"],
            "x",
            f">= {ceiling} (goal)",
            ratio["mw_b"] >= ceiling,
        ),
        _row("ratio (c) (b) + token budget + DLP / haproxy", ratio["mw_c"], "x"),
        _row("ratio (b) 2 workers per sidecar / haproxy (not of record)", ratio[WORKERS_SETUP], "x"),
    ]
    direct = rate["direct"]
    for name, label in (("mw_b", "(b)"), ("mw_a", "(a)"), ("haproxy", "haproxy"), ("forwarder", "forwarder")):
        p50 = round(rate[name]["p50_ms"] - direct["p50_ms"], 3)
        p99 = round(rate[name]["p99_ms"] - direct["p99_ms"], 3)
        goal = name == "mw_b"
        out.append(
            _row(
                f"added p50 at {RATE:,} req/s {label}",
                p50,
                "ms",
                f"<= {GOAL_P50}" if goal else None,
                p50 <= GOAL_P50 if goal else None,
            )
        )
        out.append(
            _row(
                f"added p99 at {RATE:,} req/s {label}",
                p99,
                "ms",
                f"<= {GOAL_P99}" if goal else None,
                p99 <= GOAL_P99 if goal else None,
            )
        )
    for name, label in (
        ("mw_b", "(b)"),
        ("mw_a", "(a)"),
        ("mw_c", "(c)"),
        (WORKERS_SETUP, "(b) 2 workers, workers summed"),
        ("haproxy", "haproxy"),
        ("forwarder", "forwarder"),
    ):
        cpu = max(tp[name]["cpu_s_per_1k_client"], tp[name]["cpu_s_per_1k_server"])
        goal = name == "mw_b"
        out.append(
            _row(
                f"CPU-s per 1,000 requests per sidecar {label} (max of pair)",
                cpu,
                "CPU-s",
                f"<= {GOAL_CPU}" if goal else None,
                cpu <= GOAL_CPU if goal else None,
            )
        )
    for name, label in (("mw_b", "(b)"), ("mw_a", "(a)"), ("mw_c", "(c)")):
        mb = max(rss[name]["client"] + rss[name]["server"])
        goal = name == "mw_b"
        out.append(
            _row(
                f"RSS per sidecar {label} (max of pair)",
                mb,
                "MB",
                f"<= {GOAL_RSS}" if goal else None,
                mb <= GOAL_RSS if goal else None,
            )
        )
    w2 = rss[WORKERS_SETUP]
    out.append(
        _row("RSS per worker process, (b) 2 workers (max)", max(w2["client"][1:] + w2["server"][1:]), "MB")
    )
    return out


def profile_tables(
    sampled: dict[str, Any], prof: dict[str, Any], unprofiled_us: float | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The profiles' lists as tables of their own (moved out of the dicts): the sampled phases
    when py-spy ran, else cProfile's (each phase's share of ``unprofiled_us`` is then an estimate
    that over-weights Python); cProfile's costliest functions with their calls per request."""
    tables: dict[str, list[dict[str, Any]]] = {}
    if "phases" in sampled:
        tables[
            f"Where the (b) server sidecar's CPU goes per request, by phase: py-spy, {SAMPLE_RATE} samples/s with "
            f"native frames, -c {CONCURRENCY} ({sampled.get('sampled_rps')} req/s while sampled); us_per_request: "
            f"the syscalls share its {sampled.get('system_us_per_request')} µs of system CPU per request, the rest "
            f"its {sampled.get('user_us_per_request')} µs of user CPU (both from /proc, in the throughput run)"
        ] = sampled.pop("phases")
    if "phases" not in prof:
        return tables
    total, rps = prof.get("us_per_request_total"), prof.get("profiled_rps")
    head = f"cProfile of the (b) server sidecar under -c {CONCURRENCY} ({rps} req/s while profiled, {total} µs per request)"
    phases, modules = prof.pop("phases"), prof.pop("modules", [])
    if not tables:
        if unprofiled_us:
            for row in phases:
                row["est_us_unprofiled"] = round(row["share_pct"] / 100 * unprofiled_us, 1)
        tables[f"{head}: CPU per request by phase (py-spy did not run; cProfile over-weights Python)"] = (
            phases
        )
        tables[f"{head}: own time by module"] = modules
    tables[f"{head}: the 15 costliest functions (own time, calls per request)"] = prof.pop("functions", [])
    return tables


def run() -> dict[str, Any]:
    ensure_tools()
    with workdir("core") as d:
        res = measure_all(d)
    tp = res["throughput"]
    res["ratios_vs_haproxy"] = {name: round(tp[name]["rps"] / tp["haproxy"]["rps"], 3) for name in tp}
    res["results"] = rows(res)
    res["tables"] = profile_tables(
        res.get("sampled", {}), res.get("profile", {}), tp["mw_b"]["cpu_s_per_1k_server"] * 1000
    )
    res["notes"] = (
        f"One run, all setups side by side: wrk -t1 -c{CONCURRENCY} for {DURATION} s per round, best of "
        f"{ROUNDS} alternating rounds; GET /data.json (1 KB JSON from nginx) for every setup, so in (c) "
        "the DLP scans the JSON answer and the token budget admits and settles each request (nginx's "
        "answer carries no usage). (a) runs with MESHWARD_TELEMETRY=off. Fixed 1,000 req/s via wrk's Lua "
        f"delay() (10 connections x 10 ms), lowest p50 and lowest p99 of {ROUNDS} rounds; added = setup "
        "minus nginx alone at the same rate. CPU per "
        "1,000 requests: /proc user+system of each proxy process over its throughput round. Phases: "
        "py-spy samples of the (b) server (native frames; idle and GIL-wait samples left out), the "
        "syscall phases scaled to its system CPU per request, the others to its user CPU (/proc, "
        "throughput run); a socket write's system time includes the kernel's loopback TCP work for the "
        "receiver. cProfile's "
        "functions come from a separate, much slower run (every Python call is timed): read their calls "
        "per request, not their µs; TLS handshakes weigh more there because fewer requests share them."
    )
    return res


def _print(res: dict[str, Any]) -> None:
    for row in res["results"]:
        met = "" if row["met"] is None else ("  met" if row["met"] else "  NOT met")
        target = f"  (target {row['target']})" if row["target"] else ""
        print(f"{row['name']:62} {row['value']!s:>10} {row['unit']}{target}{met}")
    for title, table in res.get("tables", {}).items():
        print(title)
        for row in table:
            print(
                "  " + "  ".join(f"{v!s:>10}" if not isinstance(v, str) else f"{v:58}" for v in row.values())
            )


def main() -> None:
    res = run()
    if "--json" in sys.argv:
        print(json.dumps(res, indent=2))
    _print(res)


if __name__ == "__main__":
    main()
