"""Stable Prometheus scraping of a local mesh: a ``file_sd`` targets file kept current.

``meshward up`` rewrites ``<state>/mesh/prometheus-targets.json`` (atomically) whenever its run
record changes: one target per sidecar admin listener, with ``__metrics_path__`` set to
``/stats/prometheus`` and the workload's labels. A Prometheus ``file_sd_configs`` entry pointing
at it follows restarts and new ports with no edit (see docs/operations.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from meshward.identity.keys import write_public
from meshward.mesh.records import RunRecord, mesh_dir

__all__ = ["METRICS_PATH", "prometheus_targets", "targets_path", "write_targets"]

METRICS_PATH = "/stats/prometheus"


def targets_path(state_dir: Path) -> Path:
    return mesh_dir(state_dir) / "prometheus-targets.json"


def prometheus_targets(record: RunRecord | None) -> list[dict[str, Any]]:
    """The file_sd document: every sidecar with an admin listener (none when nothing runs)."""
    if record is None:
        return []
    return [
        {
            "targets": [w.admin],
            "labels": {
                "__metrics_path__": METRICS_PATH,
                "job": "meshward-sidecars",
                "workload": w.ref,
                "namespace": w.namespace,
                "service": w.service,
                "identity": w.identity,
            },
        }
        for w in record.workloads
        if w.admin and w.state != "stopped"
    ]


def write_targets(state_dir: Path, record: RunRecord | None) -> None:
    doc = prometheus_targets(record)
    write_public(targets_path(state_dir), (json.dumps(doc, indent=2) + "\n").encode())
