"""Certificate authority throughput, in process: ``.venv/bin/python -m bench.identity``.

One thread (one core). Workload keys and CSRs are made before timing starts (workloads make
their own), then, side by side in one run:

- ``csr_verify_sign``: :meth:`Authority.sign_csr`: parse the CSR, verify its signature, check the
  SPIFFE profile (one URI SAN, no CA, trust domain, P-256), and sign an X.509-SVID. Target
  ≥ 1,000/s. Also shown as 1 / median latency, which a machine shared with other work disturbs
  less than the wall-clock rate.
- ``issue_end_to_end``: :meth:`IdentityService.issue`: the same, plus the join token consumed
  atomically in SQLite and the issuance recorded in the ledger (WAL, synchronous=NORMAL).
- ``renew_end_to_end``: :meth:`IdentityService.renew` (no token; ledger write).
- ``token_create``: :meth:`IdentityService.create_token` (random token, hash, insert).
- ``workload_key_and_csr``: what a workload spends making its P-256 key and CSR (for scale).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshward.identity.bootstrap import init_mesh
from meshward.identity.issuance import IdentityService
from meshward.identity.keys import generate_key, make_csr
from meshward.identity.spiffe import SpiffeId
from meshward.identity.state import MeshState

__all__ = ["run"]

TARGET_SIGN_PER_S = 1000.0


def _rate(n: int, fn: Callable[[int], object]) -> tuple[float, list[float]]:
    """Calls per second over ``n`` calls, and each call's latency in microseconds."""
    lat: list[float] = []
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn(i)
        lat.append((time.perf_counter_ns() - t0) / 1000)
    return n / (time.perf_counter() - start), lat


def _p(lat: list[float], q: float) -> float:
    return statistics.quantiles(lat, n=100)[int(q) - 1] if len(lat) >= 100 else max(lat)


def run() -> dict[str, Any]:
    quick = os.environ.get("MESHWARD_BENCH_QUICK") == "1"
    n = 300 if quick else 2000
    with tempfile.TemporaryDirectory() as tmp:
        state = MeshState(Path(tmp) / "state")
        init_mesh(state, "bench.local")
        sid = SpiffeId("bench.local", "ml", "fraud")
        with contextlib.closing(IdentityService(state)) as service:
            authority = service.authority()
            csr_rate, csr_lat = _rate(n // 4, lambda _i: make_csr(generate_key(), sid))
            csrs = [make_csr(generate_key(), sid) for _ in range(n)]

            sign_rate, sign_lat = _rate(n, lambda i: authority.sign_csr(csrs[i], sid))
            token_rate, _ = _rate(n, lambda _i: service.create_token(sid))
            tokens = [service.create_token(sid) for _ in range(n)]
            issue_rate, issue_lat = _rate(n, lambda i: service.issue(csrs[i], tokens[i]))
            renew_rate, renew_lat = _rate(n, lambda i: service.renew(csrs[i], sid))

    def row(name: str, value: float, unit: str = "ops/s", target: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "value": round(value, 1), "unit": unit}
        if target is not None:
            out["target"] = target
            out["met"] = value >= target
        return out

    return {
        "n": n,
        "results": [
            row("csr_verify_sign", sign_rate, target=TARGET_SIGN_PER_S),
            row("issue_end_to_end (token + sign + ledger)", issue_rate),
            row("renew_end_to_end (sign + ledger)", renew_rate),
            row("token_create", token_rate),
            row("workload_key_and_csr", csr_rate),
            row(
                "csr_verify_sign at p50 latency (load-robust)",
                1e6 / _p(sign_lat, 50),
                target=TARGET_SIGN_PER_S,
            ),
            row("csr_verify_sign p50", _p(sign_lat, 50), "µs"),
            row("csr_verify_sign p99", _p(sign_lat, 99), "µs"),
            row("issue_end_to_end p50", _p(issue_lat, 50), "µs"),
            row("issue_end_to_end p99", _p(issue_lat, 99), "µs"),
            row("renew_end_to_end p50", _p(renew_lat, 50), "µs"),
            row("workload_key_and_csr p50", _p(csr_lat, 50), "µs"),
        ],
        "csr_verify_sign_target": TARGET_SIGN_PER_S,
        "csr_verify_sign_met": sign_rate >= TARGET_SIGN_PER_S,
        "issue_vs_sign_ratio": round(issue_rate / sign_rate, 3),
        "renew_vs_sign_ratio": round(renew_rate / sign_rate, 3),
        "notes": "one thread; CSRs made before timing; SQLite WAL with synchronous=NORMAL",
    }


def main() -> None:
    result = run()
    print(f"identity benchmark, {result['n']} operations each, one thread")
    for r in result["results"]:
        target = (
            f"  (target ≥ {r['target']:.0f}: {'met' if r['met'] else 'NOT met'})" if "target" in r else ""
        )
        print(f"  {r['name']:<44} {r['value']:>10.1f} {r['unit']}{target}")
    print(f"  issue / sign ratio  {result['issue_vs_sign_ratio']}")
    print(f"  renew / sign ratio  {result['renew_vs_sign_ratio']}")


if __name__ == "__main__":
    main()
