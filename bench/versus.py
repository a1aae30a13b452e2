"""Before and after, side by side: ``.venv/bin/python -m bench.versus [--ref REV] [--rounds N]``.

The same sidecar pair as ``bench.proxy`` (client sidecar outbound ═mTLS═▶ server sidecar inbound
→ nginx, default chain, one worker each), run from two trees in one run: this checkout, and an
earlier revision (``REF`` by default: the tree before the architecture and proxy-core rework). The
two pairs take turns (the order alternates each round) against the same nginx and the same wrk,
so a noisy machine slows both alike; the result is the median of each side and their ratios.

The earlier tree is unpacked with ``git archive`` into ``.bench/versus/<rev>/`` with its own
virtualenv (``pip install -e .``, runtime dependencies only; cached between runs). Each side
writes its own certificates and bootstrap files with its own ``tests/support/sidecar.py``, so a
change of the bootstrap format between the trees does not matter. Measured per side and round:
throughput at ``-c 32``; p50/p99 and the pair's CPU at 1,000 requests/s; RSS of each sidecar.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import QUICK, total_cpu_seconds, workdir
from bench.proxy import ensure_tools, rss_mb, start_nginx, wrk
from tests.support.proc import Proc

__all__ = ["REF", "main", "run"]

ROOT = Path(__file__).resolve().parents[1]
#: The tree before this rework (issues 13 and 14): main at the end of the previous session.
REF = os.environ.get("MESHWARD_BENCH_REF", "2f6591c")
DURATION = 3 if QUICK else 5
ROUNDS = 2 if QUICK else 3

# Run in each tree (its own cwd and interpreter): start the pair, print where it listens, exit
# and leave the sidecars running (each in its own session; the caller stops them by pid).
_PAIR = """
import json, sys
from pathlib import Path
from meshward.config.snapshot import ServiceEntry
from tests.support.sidecar import issue_svid, make_snapshot, start_sidecar, write_bootstrap
d, upstream = Path(sys.argv[1]), int(sys.argv[2])
mesh = {"defaultPolicy": "allow"}
server_svid = issue_svid(d / "server", "bench/nginx")
server = start_sidecar(write_bootstrap(d / "server.json", server_svid,
    make_snapshot("bench/nginx", mesh=mesh), app=f"127.0.0.1:{upstream}"), "server")
entry = ServiceEntry("nginx", "bench", (f"127.0.0.1:{server.inbound_port}",), (server_svid.spiffe_id.uri,))
client_svid = issue_svid(d / "client", "bench/client")
client = start_sidecar(write_bootstrap(d / "client.json", client_svid,
    make_snapshot("bench/client", services=[entry], mesh=mesh)), "client")
print(json.dumps({"port": client.outbound[1], "pids": [client.proc.pid, server.proc.pid]}))
"""


def _tree(rev: str) -> tuple[Path, Path]:
    """The earlier tree and its interpreter, made once and cached."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short=12", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = ROOT / ".bench" / "versus" / sha
    python = tree / ".venv" / "bin" / "python"
    if (tree / ".venv" / ".installed").exists():
        return tree, python
    tree.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", sha], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "venv", str(tree / ".venv")], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", "."], cwd=tree, check=True)
    (tree / ".venv" / ".installed").touch()
    return tree, python


def _stop(pids: list[int]) -> None:
    """Stop the sidecars' process groups (not our children: the pair script started them), by
    SIGTERM, then SIGKILL after 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
            time.sleep(0.05)


def _round(tree: Path, python: Path, d: Path, upstream: int) -> dict[str, Any]:
    d.mkdir(parents=True)
    out = subprocess.run(
        [str(python), "-c", _PAIR, str(d), str(upstream)],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(tree)},
    )
    if out.returncode != 0:
        raise RuntimeError(f"the pair from {tree} did not start:\n{out.stderr[-2000:]}")
    pair = json.loads(out.stdout.strip().splitlines()[-1])
    pids: list[int] = pair["pids"]
    try:
        wrk(pair["port"], 32, 1)  # warm-up
        result: dict[str, Any] = {"rps": wrk(pair["port"], 32, DURATION)["rps"]}
        script = d / "rate1000.lua"
        script.write_text("function delay()\n  return 10\nend\n")
        before, t0 = total_cpu_seconds(pids), time.monotonic()
        paced = wrk(pair["port"], 10, DURATION, script)
        core = (total_cpu_seconds(pids) - before) / (time.monotonic() - t0)
        result |= {
            "p50_ms_at_1000": paced["p50_ms"],
            "p99_ms_at_1000": paced["p99_ms"],
            "cpu_s_per_1k_requests_pair": round(core / (paced["rps"] / 1000), 4),
            "rss_mb_max": max(rss_mb(p) for p in pids),
        }
        return result
    finally:
        _stop(pids)


def run(ref: str = REF, rounds: int = ROUNDS) -> dict[str, Any]:
    ensure_tools()
    sides = {"before": _tree(ref), "after": (ROOT, Path(sys.executable))}
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    with workdir("versus") as d:
        procs: list[Proc] = []
        try:
            upstream = start_nginx(d, procs)
            for r in range(rounds):
                order = list(sides) if r % 2 == 0 else list(reversed(sides))
                for name in order:
                    tree, python = sides[name]
                    samples[name].append(_round(tree, python, d / f"{name}-{r}", upstream))
        finally:
            for p in reversed(procs):
                p.stop(timeout=10)
    med = {
        name: {key: round(statistics.median(s[key] for s in runs), 4) for key in runs[0]}
        for name, runs in samples.items()
    }
    ratios = {key: round(med["after"][key] / med["before"][key], 3) for key in med["after"]}
    higher_is_better = {"rps"}
    rows = [
        {
            "name": f"{label}: after / before ({ref})",
            "value": ratios[key],
            "unit": "ratio",
            # "no worse", within what two runs of the same tree differ by on this machine
            "target": ">= 0.95" if key in higher_is_better else "<= 1.05",
            "met": ratios[key] >= 0.95 if key in higher_is_better else ratios[key] <= 1.05,
        }
        for key, label in (
            ("rps", "pair throughput (-c 32)"),
            ("cpu_s_per_1k_requests_pair", "pair CPU-seconds per 1,000 requests"),
            ("p50_ms_at_1000", "p50 at 1,000 req/s"),
            ("rss_mb_max", "RSS per sidecar (max of pair)"),
        )
    ]
    return {
        "ref": ref,
        "rounds": rounds,
        "before": med["before"],
        "after": med["after"],
        "samples": samples,
        "ratios": ratios,
        "results": rows,
        "notes": f"the pair of bench.proxy from this tree and from {ref}, taking turns against one nginx; medians "
        f"of {rounds} rounds; 'no worse' allows the 5% two runs of one tree differ by here",
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.versus")
    parser.add_argument("--ref", default=REF)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    print(json.dumps(run(args.ref, args.rounds), indent=2))


if __name__ == "__main__":
    main()
