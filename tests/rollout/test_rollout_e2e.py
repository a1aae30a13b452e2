"""The rollout example as a user runs it (``meshward up`` of examples/rollout, 1 s intervals).

One mesh, in order: the leaking chat-v2 canary is rolled back by the DLP check (every step in
``rollout status``, ``history`` and the audit trail; all traffic back on v1, no failed request);
the fixed chat-v2 applied to the running mesh is restarted by it; a new rollout promotes it
step by step with no failed request; a Workload added by ``apply`` starts, and goes away again
with ``rollback``.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mesh.meshctl import Mesh
from tests.support.proc import ROOT, wait_for

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "rollout" / "mesh.yaml"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class RolloutMesh(Mesh):
    def rollout(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.cli("rollout", "status", "chat", "--json").stdout)
        return doc

    def wait_state(self, state: str, timeout: float = 40) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            doc = self.rollout()
            return doc if doc["state"] == state else None

        found: dict[str, Any] = wait_for(reached, timeout, interval=0.2, what=f"rollout {state}")
        return found

    def caller(self, path: str = "/stats", method: str = "GET") -> dict[str, Any]:
        app = self.workload("caller")["app"]
        req = urllib.request.Request(f"http://{app}{path}", method=method)
        with _DIRECT.open(req, timeout=10) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
            return doc

    def apply_text(self, tmp: Path, text: str) -> None:
        f = tmp / f"apply-{len(list(tmp.glob('apply-*')))}.yaml"
        f.write_text(text)
        self.cli("apply", "-f", str(f))


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RolloutMesh]:
    tmp = tmp_path_factory.mktemp("rollout")
    mesh_file = tmp / "mesh.yaml"
    mesh_file.write_text(EXAMPLE.read_text().replace("interval: 5s", "interval: 1s"))
    m = RolloutMesh(tmp / "state")
    with m.detached(mesh_file):
        yield m


def _doc(text: str, kind: str, name: str) -> str:
    for doc in text.split("\n---\n"):
        if (f"kind: {kind}" in doc and f"name: {name}," in doc) or f"name: {name}}}" in doc:
            return doc
    raise AssertionError(f"no {kind} {name}")


def test_leaking_canary_is_rolled_back_by_the_dlp_check(mesh: RolloutMesh) -> None:
    doc = mesh.wait_state("rolledBack")
    assert doc["weight"] == 0 and doc["step"] == 1
    assert "dlpFindingsPer1k" in doc["reason"]
    dlp = next(c for c in doc["checks"] if c["metric"] == "dlpFindingsPer1k")
    assert dlp["value"] > 0 and dlp["limit"] == 0 and dlp["ok"] is False
    events = [h["event"] for h in doc["history"]]
    assert events[0] == "started" and events[-1] == "rolledBack"
    generations = [h["generation"] for h in doc["history"] if h["event"] in ("started", "rolledBack")]
    history = json.loads(mesh.cli("history", "--json").stdout)
    by_gen = {g["generation"]: g["applied_by"] for g in history}
    for gen in generations:
        assert "meshward-control/rollout" in by_gen[gen]
    assert "dlpFindingsPer1k" in by_gen[generations[-1]]
    trail = mesh.cli("audit", "export", "--format", "ocsf").stdout
    assert "RolloutStart" in trail and "RolloutRollback" in trail
    text = mesh.cli("rollout", "status", "chat").stdout
    assert re.search(r"dlpFindingsPer1k\s+[\d.]+\s+<= 0\s+NO", text), text
    # every sidecar at the rollback's generation: all traffic on stable, none failed
    mesh.wait_generation(generations[-1])
    mesh.caller("/stats/reset", "POST")
    stats = wait_for(lambda: (s := mesh.caller())["sent"] >= 20 and s, 20, what="caller traffic")
    assert stats["by_instance"] == {"v1": stats["sent"]} and stats["failed"] == 0
    assert stats["leaked"] == 0  # DLP masked the canary's leaks all along


def test_fixed_canary_applied_to_the_running_mesh_is_restarted_and_promoted(
    mesh: RolloutMesh, tmp_path: Path
) -> None:
    old_pid = mesh.workload("chat-v2")["pid"]
    example = EXAMPLE.read_text()
    fixed = _doc(example, "Workload", "chat-v2").replace(', "--leak-emails"', "")
    mesh.apply_text(tmp_path, fixed)
    wait_for(
        lambda: (w := mesh.workload("chat-v2"))["ready"] and w["pid"] not in (None, old_pid),
        30,
        what="chat-v2 restarted by the running mesh",
    )
    assert mesh.workload("chat-v2")["version"] == "v2"
    mesh.caller("/stats/reset", "POST")
    route = _doc(example, "ModelRoute", "chat").replace("steps: [20, 50, 100]", "steps: [50, 100]")
    mesh.apply_text(tmp_path, route.replace("interval: 5s", "interval: 1s"))
    doc = mesh.wait_state("promoted")
    events = [h["event"] for h in doc["history"]]
    assert events[-3:] == ["started", "step", "promoted"], events
    assert doc["weight"] == 100 and all(c["ok"] is not False for c in doc["checks"])
    mesh.wait_generation(max(h["generation"] for h in doc["history"] if "generation" in h))
    stats = mesh.caller()
    assert stats["failed"] == 0 and stats["by_instance"].get("v2", 0) > 0, stats


def test_workload_added_by_apply_starts_and_rollback_stops_it(mesh: RolloutMesh, tmp_path: Path) -> None:
    before = json.loads(mesh.cli("status", "--json").stdout)["control"]["generation"]
    extra = _doc(EXAMPLE.read_text(), "Workload", "chat-v1").replace("name: chat-v1,", "name: chat-v1b,")
    mesh.apply_text(tmp_path, extra.replace("serviceAccount: chat-v1", "serviceAccount: chat-v1b"))
    wait_for(
        lambda: any(w["name"] == "chat-v1b" and w["ready"] for w in mesh.status()["workloads"]),
        30,
        what="chat-v1b started by the running mesh",
    )
    mesh.cli("rollback", str(before))
    wait_for(
        lambda: all(w["name"] != "chat-v1b" for w in mesh.status()["workloads"]),
        30,
        what="chat-v1b stopped",
    )
