"""Authorization decision latency, in process: ``.venv/bin/python -m bench.authz``.

A mesh of 1,000 AuthorizationPolicies of which 100 select the benchmarked workload (70 ALLOW
policies pinned to one caller each, 10 namespace-wide ALLOW with path templates and models,
10 DENY, 5 AUDIT, 5 dry-run DENY; the other 900 live in other namespaces or select other
labels). A rotating mix of requests (allowed, denied by DENY, no ALLOW match, unknown caller)
is decided one at a time; each decision is timed alone with ``perf_counter_ns`` (timer overhead
included, so the numbers are conservative). Side by side in the same run:

- ``no_policies``: the same requests against a workload with no policy (default deny);
- ``unindexed_100``: 100 ALLOW policies selecting by namespace only (no principal index
  applies, every rule is tried): the worst case of the same size;
- ``attrs_plus_decision``: building :class:`RequestAttributes` from scratch + the decision
  (what the sidecar filter does per request).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import QUICK
from meshward.authz.attributes import RequestAttributes
from meshward.authz.engine import AuthzEngine, compile_engine
from meshward.config.snapshot import WorkloadInfo
from meshward.resources.authorization import AuthorizationPolicy

__all__ = ["build_mesh", "run"]

TRUST_DOMAIN = "bench.local"
WORKLOAD = WorkloadInfo("llm-v1", "llm", "llm", "llm", {"app": "llm", "version": "v1"})
_NOW = 1_796_000_000.0  # a fixed instant: the run is deterministic


def _policy(
    ns: str, name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None
) -> AuthorizationPolicy:
    return AuthorizationPolicy.model_validate(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
            "spec": spec,
        }
    )


def build_mesh(ns: str = "llm", app: str = "llm", open_to: str | None = None) -> list[AuthorizationPolicy]:
    """1,000 policies; 100 of them select the workload ``app`` in namespace ``ns``.

    ``open_to``: the first ALLOW policy lets this principal GET anything (the load generator
    of the sidecar run)."""
    policies: list[AuthorizationPolicy] = []
    sel = {"matchLabels": {"app": app}}
    if open_to is not None:
        rule = {
            "from": [{"source": {"principals": [open_to]}}],
            "to": [{"operation": {"methods": ["GET"], "paths": ["/*"]}}],
        }
        policies.append(_policy(ns, "allow-load-generator", {"selector": sel, "rules": [rule]}))
    for i in range(70 if open_to is None else 69):
        policies.append(
            _policy(
                ns,
                f"allow-caller-{i:03d}",
                {
                    "selector": sel,
                    "rules": [
                        {
                            "from": [{"source": {"principals": [f"team{i}/client"]}}],
                            "to": [
                                {
                                    "operation": {
                                        "methods": ["POST"],
                                        "paths": ["/v1/chat/completions", "/v1/embeddings"],
                                        "models": [f"model-{i % 7}", "gpt-4o*"],
                                    }
                                }
                            ],
                        }
                    ],
                },
            )
        )
    for i in range(10):
        policies.append(
            _policy(
                ns,
                f"allow-ns-{i:02d}",
                {
                    "rules": [
                        {
                            "from": [{"source": {"namespaces": [f"batch{i}"]}}],
                            "to": [
                                {"operation": {"paths": ["/v2/models/{*}/infer"], "aiOperations": ["infer"]}}
                            ],
                            "when": [{"key": "request.time", "values": ["Mon-Fri 01:00-05:00 UTC"]}],
                        }
                    ]
                },
            )
        )
    for i in range(10):
        policies.append(
            _policy(
                ns,
                f"deny-{i:02d}",
                {
                    "action": "DENY",
                    "rules": [
                        {"to": [{"operation": {"paths": [f"/admin{i}*"]}}]},
                        {"from": [{"source": {"ipBlocks": [f"203.0.{i}.0/24"]}}]},
                    ],
                },
            )
        )
    for i in range(5):
        policies.append(
            _policy(
                ns,
                f"audit-{i}",
                {"action": "AUDIT", "rules": [{"to": [{"operation": {"aiOperations": ["admin"]}}]}]},
            )
        )
    for i in range(5):
        policies.append(
            _policy(
                ns,
                f"dry-deny-{i}",
                {
                    "action": "DENY",
                    "rules": [{"when": [{"key": "request.headers[x-tenant]", "values": [f"t{i}"]}]}],
                },
                {"meshward.dev/dry-run": "true"},
            )
        )
    # 900 that do not select the workload: other namespaces, or other labels in "llm".
    for i in range(800):
        policies.append(
            _policy(
                f"ns{i % 40}",
                f"p{i:03d}",
                {"rules": [{"from": [{"source": {"principals": [f"ns{i}/sa"]}}]}]},
            )
        )
    for i in range(100):
        policies.append(
            _policy(ns, f"other-{i:03d}", {"selector": {"matchLabels": {"app": f"other{i}"}}, "rules": [{}]})
        )
    return policies


def _requests() -> list[RequestAttributes]:
    out: list[RequestAttributes] = []
    for i in range(64):
        caller = i % 80  # 70 known callers, 10 unknown
        out.append(
            RequestAttributes(
                method="POST",
                path="/v1/chat/completions" if i % 9 else "/admin3/x",
                host="llm.llm",
                port=8000,
                principal=f"{TRUST_DOMAIN}/ns/team{caller}/sa/client",
                namespace=f"team{caller}",
                source_ip=f"10.0.{i % 4}.{i}",
                headers={"content-type": "application/json", "x-tenant": f"t{i % 12}"},
                model=f"model-{caller % 7}" if i % 5 else "gpt-4o-mini",
                operation="chat",
                now=_NOW,
            )
        )
    return out


def _time_each(
    decide: Callable[[RequestAttributes], object], reqs: list[RequestAttributes], n: int
) -> list[int]:
    clock = time.perf_counter_ns
    samples: list[int] = []
    count = len(reqs)
    for i in range(n):
        r = reqs[i % count]
        t0 = clock()
        decide(r)
        samples.append(clock() - t0)
    return samples


def _summary(samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_us": statistics.median(ordered) / 1000,
        "p99_us": ordered[int(len(ordered) * 0.99) - 1] / 1000,
    }


def _rebuild(r: RequestAttributes) -> RequestAttributes:
    return RequestAttributes(
        method=r.method,
        path=r.path,
        host=r.host,
        port=r.port,
        principal=r.principal,
        namespace=r.namespace,
        source_ip=r.source_ip,
        headers=r.headers,
        model=r.model,
        operation=r.operation,
        now=r.now,
    )


def _expect_ok(port: int) -> None:
    """One request through the pair must succeed before measuring (a 403 would be a bad setup)."""
    import httpx

    r = httpx.get("http://nginx.bench/", proxy=f"http://127.0.0.1:{port}", timeout=30, trust_env=False)
    if r.status_code != 200:
        raise RuntimeError(f"bench setup: GET through the pair answered {r.status_code}: {r.text[:200]}")


def sidecar_throughput(rounds: int = 4) -> dict[str, Any]:
    """wrk -c32 through a real sidecar pair (client → mTLS → server with the filter chain →
    nginx): the server with no policy (``defaultPolicy: allow``, no authz filter) against the
    server with the 100 selecting policies (+900 others) of :func:`build_mesh`.

    The machine is shared, so each round measures both setups back to back (the order flips
    every round) and the ratio is taken per round; the median of the rounds is reported. So is
    the server sidecar's own CPU time per request (from /proc)."""
    from bench.common import total_cpu_seconds
    from bench.proxy import CONCURRENCY, DURATION, ensure_tools, start_nginx, wrk
    from meshward.config.snapshot import ServiceEntry
    from tests.support.proc import Proc
    from tests.support.sidecar import issue_svid, make_snapshot, start_sidecar, write_bootstrap

    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="bench-authz-"))
    procs: list[Proc] = []
    setups = {
        "no_policies": ({"defaultPolicy": "allow"}, []),
        "policies_100": ({}, build_mesh("bench", "nginx", open_to="bench/client")),
    }
    rps: dict[str, list[float]] = {name: [] for name in setups}
    cpu_us: dict[str, list[float]] = {name: [] for name in setups}
    try:
        nginx = start_nginx(work, procs)
        server_svid = issue_svid(work / "server", "bench/nginx")
        client_svid = issue_svid(work / "client", "bench/client")

        def measure(name: str, tag: str) -> None:
            mesh_spec, policies = setups[name]
            pair: list[Proc] = []
            try:
                snap = make_snapshot("bench/nginx", policies=policies, mesh=mesh_spec)
                boot = write_bootstrap(work / f"s-{tag}.json", server_svid, snap, app=f"127.0.0.1:{nginx}")
                server = start_sidecar(boot, f"server-{tag}")
                pair.append(server.proc)
                entry = ServiceEntry(
                    "nginx", "bench", (f"127.0.0.1:{server.inbound_port}",), (server_svid.spiffe_id.uri,)
                )
                client_snap = make_snapshot("bench/client", services=[entry], mesh=mesh_spec)
                client = start_sidecar(
                    write_bootstrap(work / f"c-{tag}.json", client_svid, client_snap), f"client-{tag}"
                )
                pair.append(client.proc)
                port = client.outbound[1]
                _expect_ok(port)
                with contextlib.suppress(ValueError):  # warm-up; may finish no request at all
                    wrk(port, CONCURRENCY, 2)
                cpu_before = total_cpu_seconds([server.proc.pid])
                measured = wrk(port, CONCURRENCY, DURATION)
                server_cpu = total_cpu_seconds([server.proc.pid]) - cpu_before
                rps[name].append(measured["rps"])
                cpu_us[name].append(server_cpu / max(measured["requests"], 1) * 1e6)
            finally:
                for p in reversed(pair):
                    p.stop()

        for round_ in range(rounds):
            order = list(setups) if round_ % 2 == 0 else list(reversed(setups))
            for name in order:
                measure(name, f"{name}-{round_}")
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(work, ignore_errors=True)
    ratios = [p / n for p, n in zip(rps["policies_100"], rps["no_policies"], strict=True)]
    cpu_ratios = [n / p for n, p in zip(cpu_us["no_policies"], cpu_us["policies_100"], strict=True)]
    ratio = statistics.median(ratios)
    return {
        "rounds": rounds,
        "rps_no_policies_median": round(statistics.median(rps["no_policies"]), 1),
        "rps_policies_100_median": round(statistics.median(rps["policies_100"]), 1),
        "server_cpu_us_per_request_no_policies_median": round(statistics.median(cpu_us["no_policies"]), 1),
        "server_cpu_us_per_request_policies_100_median": round(statistics.median(cpu_us["policies_100"]), 1),
        "throughput_ratio_per_round": [round(r, 3) for r in ratios],
        "cpu_ratio_none_vs_100_policies": round(statistics.median(cpu_ratios), 3),
        "throughput_ratio_100_policies_vs_none": round(ratio, 3),
        "throughput_target": ">= 0.9",
        "meets_throughput_target": ratio >= 0.9,
    }


def filter_cost(iterations: int) -> dict[str, float]:
    """The whole authz filter per request (attributes from the request context, decision,
    recording, counters), as the server sidecar runs it for the load generator's GET /."""
    from meshward.ai.protocol import classify
    from meshward.filters.authz import AuthzFilter, build
    from meshward.filters.base import Peer, RequestContext, SidecarRuntime
    from tests.support.sidecar import make_snapshot

    snapshot = make_snapshot("bench/nginx", policies=build_mesh("bench", "nginx", open_to="bench/client"))
    f = build(snapshot, SidecarRuntime(workload=snapshot.workload, trust_domain=snapshot.trust_domain))
    assert isinstance(f, AuthzFilter)
    peer = Peer("127.0.0.1", 40000, "spiffe://demo.local/ns/bench/sa/client", "bench", "client")
    headers = {"host": "nginx.bench", "user-agent": "wrk"}
    contexts = []
    for i in range(64):
        ctx = RequestContext(f"r{i}", "inbound", peer, "GET", "/", "", "nginx.bench", headers, 8080, 0.0)
        ctx.ai = classify("GET", "/", headers, None)
        contexts.append(ctx)
    clock = time.perf_counter_ns
    samples: list[int] = []
    for i in range(iterations):
        ctx = contexts[i % 64]
        t0 = clock()
        step = f.on_request(ctx)
        try:
            step.send(None)
        except StopIteration:
            pass
        samples.append(clock() - t0)
        ctx.audit_marks.clear()
    return _summary(samples)


def run(iterations: int | None = None) -> dict[str, Any]:
    if iterations is None:
        iterations = 5_000 if QUICK else 50_000
    mesh = build_mesh()
    t0 = time.perf_counter()
    engine = compile_engine(mesh, WORKLOAD, trust_domain=TRUST_DOMAIN)
    compile_ms = (time.perf_counter() - t0) * 1000
    assert len(engine.policies) == 100, len(engine.policies)
    empty = AuthzEngine([], trust_domain=TRUST_DOMAIN)
    unindexed = AuthzEngine(
        [
            _policy("llm", f"ns-{i:03d}", {"rules": [{"from": [{"source": {"namespaces": [f"other{i}"]}}]}]})
            for i in range(100)
        ],
        trust_domain=TRUST_DOMAIN,
    )
    reqs = _requests()
    allowed = sum(engine.evaluate(r).allowed for r in reqs)

    def full(r: RequestAttributes) -> object:
        return engine.evaluate(_rebuild(r))

    for decide in (engine.evaluate, empty.evaluate, unindexed.evaluate, full):  # warm up
        _time_each(decide, reqs, 2000)
    results: dict[str, Any] = {
        "policies_in_mesh": len(mesh),
        "policies_selecting": len(engine.policies),
        "compile_ms": round(compile_ms, 1),
        "requests_allowed_of_64": allowed,
        "decision_1000_100": _summary(_time_each(engine.evaluate, reqs, iterations)),
        "no_policies": _summary(_time_each(empty.evaluate, reqs, iterations)),
        "unindexed_100": _summary(_time_each(unindexed.evaluate, reqs, iterations)),
        "attrs_plus_decision": _summary(_time_each(full, reqs, iterations)),
        "filter_on_request_sidecar_get": filter_cost(iterations),
    }
    base = results["no_policies"]["median_us"]
    results["ratio_median_vs_no_policies"] = round(results["decision_1000_100"]["median_us"] / base, 2)
    results["target_median_us"] = 10.0
    results["meets_target"] = results["decision_1000_100"]["median_us"] < 10.0
    if not os.environ.get("MESHWARD_BENCH_AUTHZ_NO_SIDECAR"):
        results["sidecar"] = sidecar_throughput(2 if QUICK else 4)
    rows = [
        {
            "name": "decision, 1,000 policies / 100 selecting (median)",
            "value": round(results["decision_1000_100"]["median_us"], 2),
            "unit": "µs",
            "target": "< 10",
            "met": results["meets_target"],
        },
        {
            "name": "decision, 1,000 policies / 100 selecting (p99)",
            "value": round(results["decision_1000_100"]["p99_us"], 2),
            "unit": "µs",
            "target": None,
            "met": None,
        },
    ]
    sidecar = results.get("sidecar")
    if sidecar:
        rows.append(
            {
                "name": "pair throughput, 100 policies / none",
                "value": sidecar["throughput_ratio_100_policies_vs_none"],
                "unit": "ratio",
                "target": ">= 0.9",
                "met": sidecar["meets_throughput_target"],
            }
        )
        rows.append(
            {
                "name": "server sidecar CPU per request, none / 100 policies",
                "value": sidecar["cpu_ratio_none_vs_100_policies"],
                "unit": "ratio",
                "target": None,
                "met": None,
            }
        )
    results["results"] = rows
    results["notes"] = (
        "per-decision latency timed one call at a time (timer overhead included); "
        f"{iterations} decisions per scenario on a rotating mix of 64 requests. "
        "sidecar: wrk -c32 GET / through client sidecar -> mTLS -> server sidecar -> nginx; "
        "both setups back to back per round (order flipped each round), median of the per-round ratios"
    )
    return results


def main() -> None:
    results = run()
    width = max(len(k) for k in results)
    for key, value in results.items():
        if key == "sidecar" and isinstance(value, dict):
            for k, v in value.items():
                print(f"{'sidecar.' + k:<{width}}  {v}")
            continue
        if isinstance(value, dict):
            value = "  ".join(f"{k}={v:.2f}" for k, v in value.items())
        if key in ("notes", "results"):
            continue
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
