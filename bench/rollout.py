"""Rollouts: ``.venv/bin/python -m bench.rollout``.

1. **Added cost per request of route matching and balancing**, in process: for a routed
   service (a ``ModelRoute`` with two header/principal rules, a rollout weight, mirroring, sticky
   by header) each request runs :meth:`CompiledRoute.decide` + :meth:`Balancer.pick` over its
   subset + ``started`` / ``finished`` (outlier bookkeeping) + the window's ``observe`` — what
   :mod:`meshward.proxy.forward` adds to an outbound request. Timed in batches with
   ``perf_counter_ns``; the plain-service path (no route: pick + bookkeeping) alongside.
2. **Failing check → all traffic on stable**: ``meshward up`` of ``examples/rollout`` (interval
   1 s, threshold 2, the canary leaks emails): from the first failed check to every sidecar
   enforcing the rollback's generation (their admin ``/config_dump``). Goal: one interval + 1 s.
3. **Requests failed during rollback and promotion**: the example's caller (20 requests/s,
   50 users) counts failures from before the rollout starts to after the rollback is in force,
   then across ``meshward rollout promote`` (all traffic to the canary). Goal: 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import QUICK
from meshward.resources.modelroute import WEIGHT_ANNOTATION, ModelRoute
from meshward.rollout.balancer import Balancer
from meshward.rollout.selection import CompiledRoute
from meshward.rollout.window import WindowStats

__all__ = ["run"]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "rollout" / "mesh.yaml"
TARGET_US = 5.0
INTERVAL = 1.0
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _route() -> CompiledRoute:
    doc = {
        "apiVersion": "meshward.dev/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "chat", "namespace": "llm", "annotations": {WEIGHT_ANNOTATION: "25"}},
        "spec": {
            "service": "chat",
            "subsets": {"stable": {"version": "v1"}, "canary": {"version": "v2"}},
            "stickyBy": "request.headers[x-user]",
            "rules": [
                {"match": {"principals": ["qa/tester"]}, "route": [{"subset": "canary"}]},
                {"match": {"headers": {"x-canary": "yes"}}, "route": [{"subset": "canary"}]},
            ],
            "mirror": {"subset": "canary", "percent": 5},
            "rollout": {"steps": [25, 50, 100], "interval": "30s"},
        },
    }
    return CompiledRoute(ModelRoute.model_validate(doc), "demo.local")


def _per_request_us(n: int) -> dict[str, float]:
    route = _route()
    balancer = Balancer()
    members = {"stable": ("127.0.0.1:1", "127.0.0.1:2"), "canary": ("127.0.0.1:3",)}
    keys = members["stable"] + members["canary"]
    window = WindowStats("chat.llm")
    users = [{"x-user": f"user-{i}"} for i in range(500)]
    principal = "demo.local/ns/web/sa/webapp"
    best: dict[str, float] = {}
    for _ in range(3):
        t0 = time.perf_counter_ns()
        for i in range(n):
            headers = users[i % 500]
            d = route.decide(principal, headers.get, None, i)
            cands = members[d.subset]
            key = cands[balancer.pick(cands, 1.0)]
            balancer.started(key)
            balancer.finished(key, True, 1.0)
            window.observe(d.subset, 200, 0.004)
            if len(window.subsets[d.subset].latency_ms) >= 1000:
                window.drain("llm/chat", 1, 0)
        routed = (time.perf_counter_ns() - t0) / n / 1000
        t0 = time.perf_counter_ns()
        for _ in range(n):
            key = keys[balancer.pick(keys, 1.0)]
            balancer.started(key)
            balancer.finished(key, True, 1.0)
        plain = (time.perf_counter_ns() - t0) / n / 1000
        best["routed"] = min(best.get("routed", 1e9), routed)
        best["plain"] = min(best.get("plain", 1e9), plain)
    return best


def _python_call_us() -> float:
    """What one empty Python function call costs on this machine now (context for the above)."""

    def nothing(i: int) -> None:
        return None

    best = 1e9
    for _ in range(3):
        t0 = time.perf_counter_ns()
        for i in range(100_000):
            nothing(i)
        best = min(best, (time.perf_counter_ns() - t0) / 100_000 / 1000)
    return round(best, 4)


class _Mesh:
    def __init__(self, state: Path) -> None:
        self.state = state

    def cli(self, *args: str) -> str:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("MESHWARD_STATE", None)
        done = subprocess.run(
            [sys.executable, "-m", "meshward", args[0], "--state", str(self.state), *args[1:]],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode != 0:
            raise RuntimeError(f"meshward {args[0]}: {done.stderr.strip()[-300:]}")
        return done.stdout

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.cli("status", "--json"))
        return doc

    def rollout(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.cli("rollout", "status", "chat", "--json"))
        return doc

    def get(self, url: str, method: str = "GET") -> dict[str, Any]:
        with _DIRECT.open(urllib.request.Request(url, method=method), timeout=10) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
            return doc

    def all_at(self, generation: int, admins: list[str]) -> bool:
        return all(self.get(f"http://{a}/config_dump")["generation"] >= generation for a in admins)

    def watch_generations(self, admins: list[str], stop: threading.Event) -> list[tuple[float, int]]:
        """In a thread: (time, lowest generation any sidecar enforces), whenever it changes."""
        timeline: list[tuple[float, int]] = []

        def poll() -> None:
            last = -1
            while not stop.wait(0.005):
                try:
                    low = min(self.get(f"http://{a}/config_dump")["generation"] for a in admins)
                except OSError:
                    continue
                if low != last:
                    timeline.append((time.time(), low))
                    last = low

        threading.Thread(target=poll, daemon=True).start()
        return timeline


def _wait(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


def _mesh_run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        mesh_file = Path(tmp) / "mesh.yaml"
        mesh_file.write_text(EXAMPLE.read_text().replace("interval: 5s", f"interval: {INTERVAL:g}s"))
        m = _Mesh(Path(tmp) / "state")
        m.cli("up", "-f", str(mesh_file), "--detach", "--control-port", "0")
        try:
            status = m.status()
            admins = [w["admin"] for w in status["workloads"]]
            caller = next(w["app"] for w in status["workloads"] if w["name"] == "caller")
            m.get(f"http://{caller}/stats/reset", "POST")  # failures while apps were starting: not ours
            stop = threading.Event()
            timeline = m.watch_generations(admins, stop)
            doc = _wait(lambda: (d := m.rollout())["state"] == "rolledBack" and d, 60, "rollback", 0.1)
            history = doc["history"]
            first_fail = next(h["time"] for h in history if h["event"] in ("checkFailed", "rolledBack"))
            rolled_back = next(h["time"] for h in history if h["event"] == "rolledBack")
            gen = next(h["generation"] for h in history if h["event"] == "rolledBack")
            _wait(lambda: m.all_at(gen, admins), 30, "rollback in force", 0.01)
            _wait(lambda: any(g >= gen for _, g in timeline), 10, "the poller to see it", 0.01)
            stop.set()
            in_force = next(t for t, g in timeline if g >= gen)
            time.sleep(0.5)  # requests in flight at the swap finish (and count) first
            stats = m.get(f"http://{caller}/stats")
            rollback_failed = stats["failed"]
            m.get(f"http://{caller}/stats/reset", "POST")
            promoted = json.loads(m.cli("rollout", "promote", "chat", "--json"))
            gen2 = max(h.get("generation") or 0 for h in promoted["history"])
            _wait(lambda: m.all_at(gen2, admins), 30, "promotion in force", 0.01)
            _wait(lambda: m.get(f"http://{caller}/stats")["sent"] >= 40, 30, "traffic after promotion")
            after = m.get(f"http://{caller}/stats")
            return {
                "failing_check_to_stable_s": round(in_force - first_fail, 3),
                "failing_check_to_rollback_generation_s": round(rolled_back - first_fail, 3),
                "rollback_generation_to_in_force_s": round(in_force - rolled_back, 3),
                "rollback_failed": rollback_failed,
                "rollback_sent": stats["sent"],
                "promotion_failed": after["failed"],
                "promotion_sent": after["sent"],
                "promotion_by_instance": after["by_instance"],
                "reason": doc["reason"],
            }
        finally:
            subprocess.run(
                [sys.executable, "-m", "meshward", "down", "--state", str(m.state)],
                cwd=ROOT,
                capture_output=True,
                timeout=60,
            )


def run() -> dict[str, Any]:
    cost = _per_request_us(20_000 if QUICK else 100_000)
    added = cost["routed"]
    results: list[dict[str, Any]] = [
        {
            "name": "route matching + balancing per request (ModelRoute, rules, sticky, mirror)",
            "value": round(added, 2),
            "unit": "µs",
            "target": f"< {TARGET_US:g}",
            "met": added < TARGET_US,
        },
        {
            "name": "balancing only (service without a ModelRoute)",
            "value": round(cost["plain"], 2),
            "unit": "µs",
        },
    ]
    out: dict[str, Any] = {
        "per_request_us": cost,
        "python_call_us": _python_call_us(),
        "load": os.getloadavg(),
    }
    try:
        mesh = _mesh_run()
    except Exception as exc:
        out["mesh_skipped"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    else:
        out["mesh"] = mesh
        limit = INTERVAL + 1.0
        results += [
            {
                "name": f"failing check → all traffic on stable (interval {INTERVAL:g} s, threshold 2)",
                "value": mesh["failing_check_to_stable_s"],
                "unit": "s",
                "target": f"<= {limit:g}",
                "met": mesh["failing_check_to_stable_s"] <= limit,
            },
            {
                "name": f"requests failed during rollout + rollback (of {mesh['rollback_sent']})",
                "value": mesh["rollback_failed"],
                "unit": "requests",
                "target": "0",
                "met": mesh["rollback_failed"] == 0,
            },
            {
                "name": f"requests failed during promotion (of {mesh['promotion_sent']})",
                "value": mesh["promotion_failed"],
                "unit": "requests",
                "target": "0",
                "met": mesh["promotion_failed"] == 0,
            },
        ]
    out["results"] = results
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
