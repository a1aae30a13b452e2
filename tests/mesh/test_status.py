"""``meshward status`` from the state directory: a NACK and its reason, a dead runner's record."""

from __future__ import annotations

import os
from pathlib import Path

from meshward.config.store import ConfigStore
from meshward.identity.bootstrap import init_mesh
from meshward.identity.state import MeshState
from meshward.mesh.records import RunRecord, WorkloadRecord, write_run
from meshward.mesh.status import mesh_status, render_status


def _state(tmp_path: Path) -> MeshState:
    state = MeshState(tmp_path / "state")
    init_mesh(state, "demo.local")
    return state


def test_a_rejected_generation_shows_with_its_reason(tmp_path: Path) -> None:
    state = _state(tmp_path)
    record = WorkloadRecord("model", "ml", "model", "spiffe://demo.local/ns/ml/sa/model", state="ready")
    write_run(state.path, RunRecord(supervisor_pid=os.getpid(), mesh_file="mesh.yaml", workloads=[record]))
    ConfigStore(state.db_path).record_ack("ml/model", 4, ok=False, reason="SnapshotRejected: bad regex")
    doc = mesh_status(state)
    assert doc["workloads"][0]["config"] == {
        "generation": 4,
        "status": "NACK",
        "reason": "SnapshotRejected: bad regex",
    }
    assert doc["workloads"][0]["ready"] is False  # no processes behind this record
    assert "ml/model: sidecar rejected generation 4: SnapshotRejected: bad regex" in doc["warnings"]
    text = render_status(doc)
    assert "NACK 4" in text and "warning: ml/model: sidecar rejected generation 4" in text


def test_a_dead_runners_record_is_not_shown_as_running(tmp_path: Path) -> None:
    state = _state(tmp_path)
    record = WorkloadRecord("model", "ml", "model", "spiffe://demo.local/ns/ml/sa/model", ready=True)
    write_run(state.path, RunRecord(supervisor_pid=2**22 + 12345, mesh_file="mesh.yaml", workloads=[record]))
    doc = mesh_status(state)
    assert doc["workloads"] == [] and doc["runner"] is None
    assert doc["control"] == {"url": None, "pid": None, "generation": 0}
