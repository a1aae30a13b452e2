"""``Workload`` ``spec.sidecar.workers``: ``meshward up`` runs that sidecar as N processes sharing
its ports, and ``meshward status`` shows each worker with the generation it took."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.mesh.meshctl import QUICKSTART, Mesh, alive

pytestmark = pytest.mark.e2e


def test_up_runs_a_two_worker_sidecar_and_status_shows_each_worker(tmp_path: Path) -> None:
    text = QUICKSTART.read_text().replace(
        "readiness: {httpGet: /health}\n---\napiVersion: meshward.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: webapp",
        "readiness: {httpGet: /health}\n  sidecar: {workers: 2}\n---\napiVersion: meshward.dev/v1alpha1\n"
        "kind: Workload\nmetadata:\n  name: webapp",
        1,
    )
    assert "sidecar: {workers: 2}" in text  # on tiny-model
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(text)
    with Mesh(tmp_path / "state").detached(mesh_file) as mesh:
        doc = json.loads(mesh.cli("status", "--json").stdout)
        model = next(w for w in doc["workloads"] if w["name"] == "tiny-model")
        webapp = next(w for w in doc["workloads"] if w["name"] == "webapp")
        workers = model["sidecar_workers"]
        assert [w["worker"] for w in workers] == [0, 1]
        assert all(w["pid"] is not None and alive(w["pid"]) for w in workers)
        assert all(w["config"] == {"generation": 1, "status": "ACK", "reason": ""} for w in workers)
        assert "ml/tiny-model#w1" not in {s["sidecar"] for s in doc["sidecars"]}  # shown once, above
        assert [w["worker"] for w in webapp["sidecar_workers"]] == [0]  # the default: one
        assert webapp["sidecar_workers"][0]["pid"] == webapp["sidecar_pid"]
        status, answer = mesh.ask("two workers")
        assert status == 200, answer
