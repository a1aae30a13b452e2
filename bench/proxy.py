"""Sidecar data plane: ``.venv/bin/python -m bench.proxy``.

Side by side in one run, against the same upstream (nginx from Debian serving a ~1 KB JSON):

- ``direct``   wrk → nginx;
- ``haproxy``  wrk → HAProxy 2.6 (plain in) ═mTLS═▶ HAProxy 2.6 (mTLS in) → nginx;
- ``meshward`` wrk → Meshward client sidecar (outbound) ═mTLS═▶ Meshward server sidecar
  (inbound, filter chain as built by ``build_chain``) → nginx. One worker each;
- ``compiled_vs_pure`` (only when this install is compiled): the Meshward pair as built and a
  second pair under ``MESHWARD_PURE=1`` (the hot modules run as Python, not as their mypyc
  build), loaded at the same time by two wrk (``-c 16`` each) for a few paired rounds, so that
  both see the same contention from whatever else runs on the machine: throughput and CPU time
  per request of each, and their ratios (medians over the rounds).

Measured with wrk (Debian): throughput at fixed concurrency (``-c 32``), then latency p50/p99 at
fixed rates of 500, 1,000 and 2,000 requests/s. wrk2 is not in Debian, so the fixed rate is made
with wrk's Lua ``delay()`` hook: each of 10 connections waits ``10,000/rate`` ms between
requests (the rate actually reached is reported; latencies exclude the pacing delay). CPU per
1,000 requests/s is the proxies' own CPU time (both processes of a pair, from /proc) during the
1,000 requests/s run, as a fraction of one core, divided by the reached rate. RSS is read from
/proc after the runs. Finally a short cProfile of the server sidecar under load names what costs
the most. nginx, HAProxy and wrk are installed with apt-get if missing.
"""

from __future__ import annotations

import json
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import QUICK, total_cpu_seconds, workdir
from meshward.config.snapshot import ServiceEntry
from meshward.native import PURE_ENV
from meshward.native import status as native_status
from tests.support.proc import Proc, free_port, spawn, wait_port
from tests.support.sidecar import issue_svid, make_snapshot, start_sidecar, write_bootstrap

DURATION = 3 if QUICK else 5
RATES = (500, 1000, 2000)
RATE_CONNECTIONS = 10
CONCURRENCY = 32
BODY = (
    json.dumps(
        {
            "model_name": "fraud-v1",
            "model_version": "1",
            "outputs": [{"name": "score", "datatype": "FP32", "shape": [64], "data": [0.123456789] * 64}],
        }
    )
    + "\n"
)  # about 1 KB, valid JSON


def ensure_tools() -> None:
    missing = [
        pkg
        for pkg, binary in (("nginx", "nginx"), ("haproxy", "haproxy"), ("wrk", "wrk"))
        if not shutil.which(binary)
    ]
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=True, env=env
        )


# ---- the three setups --------------------------------------------------------------------------


def start_nginx(d: Path, procs: list[Proc], body: str = BODY, tls: tuple[Path, Path] | None = None) -> int:
    """nginx answering every request with ``body`` (JSON), keep-alive without limit; over TLS
    with ``tls`` = (certificate, key) (the egress bench's external service)."""
    port = free_port()
    listen = f"127.0.0.1:{port}"
    if tls is not None:
        listen = (
            f"{listen} ssl;\n    ssl_certificate {tls[0]};\n    ssl_certificate_key {tls[1]};\n"
            "    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_cache shared:SSL:1m"
        )
    (d / "nginx").mkdir()
    (d / "nginx" / "data.json").write_text(body)
    conf = d / "nginx" / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
pid {d}/nginx/nginx.pid;
error_log {d}/nginx/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  client_body_temp_path {d}/nginx; proxy_temp_path {d}/nginx; fastcgi_temp_path {d}/nginx;
  uwsgi_temp_path {d}/nginx; scgi_temp_path {d}/nginx;
  default_type application/json;
  server {{
    listen {listen};
    location / {{ return 200 '{body.strip()}'; }}
  }}
}}
"""
    )
    procs.append(
        spawn(["nginx", "-p", str(d / "nginx"), "-c", str(conf), "-g", "daemon off;"], d / "nginx.log")
    )
    wait_port(port)
    return port


def start_haproxy_pair(d: Path, upstream: int, procs: list[Proc]) -> tuple[int, list[int]]:
    server = issue_svid(d / "hap-server", "bench/nginx")
    client = issue_svid(d / "hap-client", "bench/client")
    for svid, name in ((server, "server.pem"), (client, "client.pem")):
        (d / name).write_bytes(svid.cert.read_bytes() + svid.key.read_bytes())
    bundle = server.bundle
    s_port, c_port = free_port(), free_port()
    common = """
global
  nbthread 1
  maxconn 4096
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
"""
    (d / "hap-server.cfg").write_text(
        common
        + f"""
frontend mtls_in
  bind 127.0.0.1:{s_port} ssl crt {d}/server.pem ca-file {bundle} verify required ssl-min-ver TLSv1.2
  default_backend app
backend app
  server nginx 127.0.0.1:{upstream}
"""
    )
    (d / "hap-client.cfg").write_text(
        common
        + f"""
frontend plain_in
  bind 127.0.0.1:{c_port}
  default_backend mesh
backend mesh
  server peer 127.0.0.1:{s_port} ssl crt {d}/client.pem ca-file {bundle} verify required ssl-min-ver TLSv1.2
"""
    )
    pids = []
    for name in ("hap-server", "hap-client"):
        proc = spawn(["haproxy", "-db", "-f", str(d / f"{name}.cfg")], d / f"{name}.log")
        procs.append(proc)
        pids.append(proc.pid)
    wait_port(s_port)
    wait_port(c_port)
    return c_port, pids


def start_meshward_pair(
    d: Path, upstream: int, procs: list[Proc], profile: Path | None = None, pure: bool = False
) -> tuple[int, list[int]]:
    """A client + server sidecar pair; ``pure``: both run the hot path as Python (MESHWARD_PURE=1)."""
    if not pure:
        return _start_meshward_pair(d, upstream, procs, profile)
    os.environ[PURE_ENV] = "1"
    try:
        return _start_meshward_pair(d, upstream, procs, profile)
    finally:
        os.environ.pop(PURE_ENV, None)


def _start_meshward_pair(
    d: Path, upstream: int, procs: list[Proc], profile: Path | None
) -> tuple[int, list[int]]:
    server_svid = issue_svid(d / "mw-server", "bench/nginx")
    mesh = {"defaultPolicy": "allow"}
    server_boot = write_bootstrap(
        d / "mw-server.json",
        server_svid,
        make_snapshot("bench/nginx", mesh=mesh),
        app=f"127.0.0.1:{upstream}",
    )
    if profile:
        os.environ["MESHWARD_PROFILE"] = str(profile)
    try:
        server = start_sidecar(server_boot, "mw-server")
    finally:
        os.environ.pop("MESHWARD_PROFILE", None)
    procs.append(server.proc)
    server_inbound, server_pid = f"127.0.0.1:{server.inbound_port}", server.proc.pid
    entry = ServiceEntry("nginx", "bench", (server_inbound,), (server_svid.spiffe_id.uri,))
    client_svid = issue_svid(d / "mw-client", "bench/client")
    client_boot = write_bootstrap(
        d / "mw-client.json", client_svid, make_snapshot("bench/client", services=[entry], mesh=mesh)
    )
    client = start_sidecar(client_boot, "mw-client")
    procs.append(client.proc)
    return client.outbound[1], [client.proc.pid, server_pid]


# ---- load and measurements ---------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(
    port: int,
    connections: int,
    duration: int,
    script: Path | None = None,
    headers: dict[str, str] | None = None,
    scheme: str = "http",
    timeout: int | None = None,
) -> dict[str, float]:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-H", "Host: nginx.bench"]
    if timeout is not None:  # seconds before wrk counts a request as a socket error (default 2)
        args.append(f"--timeout={timeout}s")
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    if script is not None:
        args += ["-s", str(script)]
    out = subprocess.run(
        [*args, f"{scheme}://127.0.0.1:{port}/data.json"],
        capture_output=True,
        text=True,
        timeout=duration + 30 + (timeout or 0),
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors on port {port}:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "rps": round(rps, 1),
        "p50_ms": round(p50, 3),
        "p99_ms": round(p99, 3),
        "requests": requests,
        "errors": int(errors.group(1)) if errors else 0,
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def measure(port: int, pids: list[int], d: Path) -> dict[str, Any]:
    res: dict[str, Any] = {}
    wrk(port, CONCURRENCY, 1)  # warm-up: connections, pools, caches
    res["throughput"] = wrk(port, CONCURRENCY, DURATION)
    for rate in RATES:
        script = d / f"rate{rate}.lua"
        script.write_text(f"function delay()\n  return {RATE_CONNECTIONS * 1000 // rate}\nend\n")
        before = total_cpu_seconds(pids)
        t0 = time.monotonic()
        run = wrk(port, RATE_CONNECTIONS, DURATION, script)
        elapsed = time.monotonic() - t0
        if pids and rate == 1000:
            core = (total_cpu_seconds(pids) - before) / elapsed
            run["cpu_core_per_1k_rps"] = round(core / (run["rps"] / 1000), 3)
        res[f"rate_{rate}"] = run
    if pids:
        res["rss_mb"] = [rss_mb(p) for p in pids]
    return res


def profile_meshward(d: Path, upstream: int) -> list[str]:
    """cProfile the server sidecar under ``-c 32`` load: the top functions by own time."""
    base = d / "server.prof"
    procs: list[Proc] = []
    (d / "prof").mkdir(exist_ok=True)
    try:
        port, pids = start_meshward_pair(d / "prof", upstream, procs, profile=base)
        wrk(port, CONCURRENCY, DURATION)
    finally:
        for p in reversed(procs):
            p.stop(timeout=10)
    out = base.with_name(f"{base.name}.{pids[1]}")
    if not out.exists():
        return ["(no profile written)"]
    stats = pstats.Stats(str(out))
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:12]  # type: ignore[attr-defined]
    lines = []
    for (file, line, func), (_cc, calls, tt, _ct, _callers) in rows:
        where = f"{Path(file).name}:{line}" if line else file
        lines.append(f"{100 * tt / total:5.1f}%  {calls:>8}  {func} ({where})")
    return lines


PAIRED_ROUNDS = 3 if QUICK else 6
PAIRED_SECONDS = 6


def compiled_vs_pure(d: Path, upstream: int, procs: list[Proc]) -> dict[str, Any]:
    """The compiled pair and a pure-Python pair under load at the same time, round after round."""
    first = len(procs)
    pairs: dict[str, tuple[int, list[int]]] = {}
    for name in ("compiled", "pure"):
        (d / f"mw-{name}").mkdir()
        pairs[name] = start_meshward_pair(d / f"mw-{name}", upstream, procs, pure=name == "pure")
    rounds: dict[str, list[dict[str, float]]] = {"compiled": [], "pure": []}
    try:
        for port, _pids in pairs.values():
            wrk(port, CONCURRENCY // 2, 1)  # warm-up
        for _ in range(PAIRED_ROUNDS):
            before = {name: total_cpu_seconds(pids) for name, (_port, pids) in pairs.items()}
            with ThreadPoolExecutor(len(pairs)) as pool:
                runs = dict(
                    zip(
                        pairs,
                        pool.map(lambda pair: wrk(pair[0], CONCURRENCY // 2, PAIRED_SECONDS), pairs.values()),
                        strict=True,
                    )
                )
            for name, (_port, pids) in pairs.items():
                cpu = total_cpu_seconds(pids) - before[name]
                rounds[name].append(
                    {
                        "rps": runs[name]["rps"],
                        "cpu_ms_per_request": round(1000 * cpu / runs[name]["requests"], 4),
                    }
                )
    finally:
        for p in procs[first:]:
            p.stop()
    medians = {
        name: {key: statistics.median(r[key] for r in rs) for key in ("rps", "cpu_ms_per_request")}
        for name, rs in rounds.items()
    }
    return {
        "rounds": rounds,
        "medians": medians,
        "throughput_ratio": round(medians["compiled"]["rps"] / medians["pure"]["rps"], 3),
        "cpu_ratio_pure_over_compiled": round(
            medians["pure"]["cpu_ms_per_request"] / medians["compiled"]["cpu_ms_per_request"], 3
        ),
        "rounds_compiled_cheaper": sum(
            a["cpu_ms_per_request"] < b["cpu_ms_per_request"]
            for a, b in zip(rounds["compiled"], rounds["pure"], strict=True)
        ),
    }


def cpu_rows(mw: dict[str, Any], hap: dict[str, Any], labels: tuple[str, str]) -> list[dict[str, Any]]:
    """Informational rows: each side's CPU per 1,000 req/s from its 1,000 req/s run."""
    return [
        {
            "name": f"CPU per 1,000 req/s ({name})",
            "value": side["rate_1000"].get("cpu_core_per_1k_rps"),
            "unit": "cores",
            "target": None,
            "met": None,
        }
        for name, side in zip(labels, (mw, hap), strict=True)
    ]


def run() -> dict[str, Any]:
    ensure_tools()
    compiled = native_status().compiled  # then also measure the pair under MESHWARD_PURE=1
    results: dict[str, Any] = {"compiled": compiled}
    with workdir("proxy") as d:
        (d / "hap").mkdir()
        (d / "mw").mkdir()
        procs: list[Proc] = []
        try:
            nginx = start_nginx(d, procs)
            results["direct"] = measure(nginx, [], d)
            hap_port, hap_pids = start_haproxy_pair(d / "hap", nginx, procs)
            results["haproxy"] = measure(hap_port, hap_pids, d)
            mw_port, mw_pids = start_meshward_pair(d / "mw", nginx, procs)
            results["meshward"] = measure(mw_port, mw_pids, d)
            for p in procs[-2:]:
                p.stop()
            if compiled:
                results["compiled_vs_pure"] = compiled_vs_pure(d, nginx, procs)
            results["profile_server_sidecar"] = profile_meshward(d, nginx)
        finally:
            for p in reversed(procs):
                p.stop()
    direct, hap, mw = results["direct"], results["haproxy"], results["meshward"]
    ratio = mw["throughput"]["rps"] / hap["throughput"]["rps"]
    added_p50 = mw["rate_1000"]["p50_ms"] - direct["rate_1000"]["p50_ms"]
    rss = max(mw["rss_mb"])
    results["throughput_ratio_meshward_vs_haproxy"] = round(ratio, 3)
    results["throughput_ratio_haproxy_vs_direct"] = round(
        hap["throughput"]["rps"] / direct["throughput"]["rps"], 3
    )
    results["throughput_ratio_meshward_vs_direct"] = round(
        mw["throughput"]["rps"] / direct["throughput"]["rps"], 3
    )
    results["added_p50_ms_at_1000rps"] = {
        "meshward": round(added_p50, 3),
        "haproxy": round(hap["rate_1000"]["p50_ms"] - direct["rate_1000"]["p50_ms"], 3),
    }
    results["results"] = [
        {
            "name": "throughput meshward / haproxy (-c 32)",
            "value": round(ratio, 3),
            "unit": "x",
            "target": ">= 0.6",
            "met": ratio >= 0.6,
        },
        {
            "name": "added p50 latency at 1,000 req/s",
            "value": round(added_p50, 3),
            "unit": "ms",
            "target": "< 1",
            "met": added_p50 < 1.0,
        },
        {
            "name": "RSS per sidecar (max of pair)",
            "value": rss,
            "unit": "MB",
            "target": "< 60",
            "met": rss < 60,
        },
        *cpu_rows(mw, hap, ("meshward pair", "haproxy pair")),
    ]
    if "compiled_vs_pure" in results:
        paired = results["compiled_vs_pure"]
        results["throughput_ratio_compiled_vs_pure"] = paired["throughput_ratio"]
        results["results"] += [
            {
                "name": "throughput, compiled (mypyc) / pure Python pair (paired rounds)",
                "value": paired["throughput_ratio"],
                "unit": "x",
                "target": None,
                "met": None,
            },
            {
                "name": "CPU per request, pure Python / compiled pair (paired rounds)",
                "value": paired["cpu_ratio_pure_over_compiled"],
                "unit": "x",
                "target": None,
                "met": None,
            },
        ]
    results["notes"] = (
        "fixed rates via wrk's Lua delay() (wrk2 is not in Debian): 10 connections, each pausing 10,000/rate ms "
        "between requests; 'rps' is the rate reached. HAProxy verifies the peer chain but cannot check a SPIFFE "
        "URI SAN; Meshward also checks the server's SPIFFE ID and runs its inbound filter chain."
    )
    return results


def _print(results: dict[str, Any]) -> None:
    print(
        f"{'setup':10} {'rps@c32':>9} {'p50':>7} {'p99':>7} | "
        + " | ".join(f"{r:>5}/s p50   p99  " for r in RATES)
        + " | CPU/1k  RSS MB"
    )
    for name in ("direct", "haproxy", "meshward"):
        r = results[name]
        t = r["throughput"]
        row = f"{name:10} {t['rps']:9.0f} {t['p50_ms']:7.2f} {t['p99_ms']:7.2f} | "
        row += " | ".join(
            f"{r[f'rate_{x}']['rps']:6.0f} {r[f'rate_{x}']['p50_ms']:5.2f} {r[f'rate_{x}']['p99_ms']:5.2f}"
            for x in RATES
        )
        row += f" | {r['rate_1000'].get('cpu_core_per_1k_rps', '-')!s:>6} {r.get('rss_mb', '-')}"
        print(row)
    for key in (
        "throughput_ratio_meshward_vs_haproxy",
        "throughput_ratio_haproxy_vs_direct",
        "added_p50_ms_at_1000rps",
    ):
        print(f"{key}: {results[key]}")
    if "compiled_vs_pure" in results:
        paired = results["compiled_vs_pure"]
        print(
            f"compiled vs pure (paired rounds): throughput x{paired['throughput_ratio']}, pure CPU per request "
            f"x{paired['cpu_ratio_pure_over_compiled']}, compiled cheaper in {paired['rounds_compiled_cheaper']}"
            f"/{len(paired['rounds']['compiled'])} rounds; medians {paired['medians']}"
        )
    print("profile (server sidecar, own time):")
    for line in results["profile_server_sidecar"]:
        print("  " + line)


def main() -> None:
    results = run()
    if "--json" in sys.argv:
        print(json.dumps(results, indent=2))
    _print(results)


if __name__ == "__main__":
    main()
