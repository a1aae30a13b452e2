"""Certificate authority throughput, in process: ``.venv/bin/python -m bench.identity``.

One thread. Workload keys and CSRs are made before timing starts (workloads make their own).
Each operation is reported per CPU second of the benchmark thread (what one core does, even on a
machine busy with other work: the target is judged on this) and per wall-clock second, with
median and p99 latency. Side by side in one run:

- ``csr_verify_sign``: :meth:`Authority.sign_csr`: parse the CSR, verify its signature, check the
  SPIFFE profile (one URI SAN, no CA, trust domain, P-256), sign an X.509-SVID. Target ≥ 1,000/s.
- ``issue_end_to_end``: :meth:`IdentityService.issue`: the same, plus one use of the join token
  spent and the issuance recorded, in one SQLite transaction (WAL, synchronous=NORMAL).
- ``renew_end_to_end``: :meth:`IdentityService.renew` (no token; ledger write).
- ``token_create``: :meth:`IdentityService.create_token` (random token, hash, insert).
- ``workload_key_and_csr``: what a workload spends making its P-256 key and CSR (for scale).
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import QUICK
from meshward.identity.bootstrap import init_mesh
from meshward.identity.issuance import IdentityService
from meshward.identity.keys import generate_key, make_csr
from meshward.identity.spiffe import SpiffeId
from meshward.identity.state import MeshState

__all__ = ["run"]

TARGET_SIGN_PER_S = 1000.0


@dataclass(frozen=True)
class Timing:
    per_cpu_s: float
    per_wall_s: float
    p50_us: float
    p99_us: float


def _time(n: int, fn: Callable[[int], object]) -> Timing:
    lat: list[float] = []
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn(i)
        lat.append((time.perf_counter_ns() - t0) / 1000)
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    q = statistics.quantiles(lat, n=100)
    return Timing(n / max(cpu, 1e-9), n / wall, q[49], q[98])


def run() -> dict[str, Any]:
    n = 300 if QUICK else 2000
    with tempfile.TemporaryDirectory() as tmp:
        state = MeshState(Path(tmp) / "state")
        init_mesh(state, "bench.local")
        sid = SpiffeId("bench.local", "ml", "fraud")
        with contextlib.closing(IdentityService(state)) as service:
            authority = service.authority()
            timings = {"workload_key_and_csr": _time(n // 4, lambda _i: make_csr(generate_key(), sid))}
            csrs = [make_csr(generate_key(), sid) for _ in range(n)]
            timings["csr_verify_sign"] = _time(n, lambda i: authority.sign_csr(csrs[i], sid))
            timings["token_create"] = _time(n, lambda _i: service.create_token(sid))
            tokens = [service.create_token(sid) for _ in range(n)]
            timings["issue_end_to_end"] = _time(n, lambda i: service.issue(csrs[i], tokens[i]))
            timings["renew_end_to_end"] = _time(n, lambda i: service.renew(csrs[i], sid))

    results: list[dict[str, Any]] = []
    for name, t in timings.items():
        row: dict[str, Any] = {
            "name": f"{name} per CPU second",
            "value": round(t.per_cpu_s, 1),
            "unit": "ops/s",
        }
        if name == "csr_verify_sign":
            row |= {"target": TARGET_SIGN_PER_S, "met": t.per_cpu_s >= TARGET_SIGN_PER_S}
        results.append(row)
        results.append({"name": f"{name} per wall second", "value": round(t.per_wall_s, 1), "unit": "ops/s"})
        results.append({"name": f"{name} p50", "value": round(t.p50_us, 1), "unit": "µs"})
        results.append({"name": f"{name} p99", "value": round(t.p99_us, 1), "unit": "µs"})
    sign, issue, renew = timings["csr_verify_sign"], timings["issue_end_to_end"], timings["renew_end_to_end"]
    return {
        "n": n,
        "results": results,
        "csr_verify_sign_target": TARGET_SIGN_PER_S,
        "csr_verify_sign_met": sign.per_cpu_s >= TARGET_SIGN_PER_S,
        "issue_vs_sign_ratio": round(issue.per_cpu_s / sign.per_cpu_s, 3),
        "renew_vs_sign_ratio": round(renew.per_cpu_s / sign.per_cpu_s, 3),
        "notes": "one thread; CSRs made before timing; rates per CPU second of the thread and per wall second",
    }


def main() -> None:
    result = run()
    print(f"identity benchmark: {result['n']} operations each, one thread")
    for r in result["results"]:
        target = f"   target ≥ {r['target']:.0f}: {'met' if r['met'] else 'NOT met'}" if "target" in r else ""
        print(f"  {r['name']:<42} {r['value']:>10.1f} {r['unit']}{target}")
    print(f"  issue / sign (CPU)  {result['issue_vs_sign_ratio']}")
    print(f"  renew / sign (CPU)  {result['renew_vs_sign_ratio']}")


if __name__ == "__main__":
    main()
