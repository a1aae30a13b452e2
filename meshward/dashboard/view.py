"""What the dashboard pages read: the running workloads, their sidecars, config, traffic, access.

Everything comes from the state directory (like ``meshward status``: the runner's
``mesh/run.json``, the config store, the CA files, the audit trail) and from the sidecars'
admin endpoints on loopback (metrics, tap). Nothing here writes to the mesh.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshward.config.store import ConfigStore
from meshward.control.client import pid_alive
from meshward.dashboard.tap import TapRelay
from meshward.dashboard.traffic import EdgeCounts, Sample, TrafficHistory
from meshward.identity.state import MeshState
from meshward.mesh.records import read_run

__all__ = ["MeshView", "WorkloadNode"]


@dataclass(slots=True)
class WorkloadNode:
    """One workload as the graph shows it."""

    ref: str  # ns/name
    service: str  # service.namespace
    identity: str
    version: str = ""
    running: bool = False
    models: set[str] = field(default_factory=set)
    operations: set[str] = field(default_factory=set)  # AI operations it served (chat, infer, ...)
    dlp_findings: dict[str, float] = field(default_factory=dict)

    @property
    def is_model(self) -> bool:
        """Served AI calls: a model name or an AI operation was seen in its traffic."""
        return bool(self.models or self.operations)


class MeshView:
    """One mesh state directory, read for the dashboard (thread-safe: reads only)."""

    def __init__(self, state_dir: Path) -> None:
        self.state = MeshState(state_dir)
        self.trust_domain = self.state.trust_domain
        self.store = ConfigStore(self.state.db_path, self.trust_domain)
        self.history = TrafficHistory()
        self.relay = TapRelay(self.sidecars)

    # -- the running mesh ------------------------------------------------------------------------
    def sidecars(self) -> dict[str, str]:
        """Running workloads' sidecar admin addresses: ``ns/name`` → ``host:port``."""
        run = read_run(self.state.path)
        if run is None:
            return {}
        return {
            w.ref: w.admin
            for w in run.workloads
            if w.admin and w.sidecar_pid is not None and pid_alive(w.sidecar_pid)
        }

    def mesh_running(self) -> bool:
        from meshward.control.client import read_control_info

        run = read_run(self.state.path)
        control = read_control_info(self.state.path)
        return (run is not None and pid_alive(run.supervisor_pid)) or (
            control is not None and pid_alive(control.pid)
        )

    def resources(self, generation: int | None = None) -> list[Any]:
        return self.store.resources(generation)

    def workloads(self) -> dict[str, WorkloadNode]:
        """Every Workload of the current config (and any running one the config no longer has)."""
        from meshward.identity.spiffe import SpiffeId
        from meshward.resources.mesh import Workload

        nodes: dict[str, WorkloadNode] = {}
        for r in self.resources():
            if isinstance(r, Workload):
                ref = f"{r.metadata.namespace}/{r.metadata.name}"
                nodes[ref] = WorkloadNode(
                    ref,
                    f"{r.service}.{r.metadata.namespace}",
                    SpiffeId(self.trust_domain, r.metadata.namespace, r.service_account).uri,
                    r.metadata.labels.get("version", ""),
                )
        run = read_run(self.state.path)
        running = self.sidecars()
        for w in run.workloads if run else []:
            node = nodes.get(w.ref)
            if node is None:
                node = nodes[w.ref] = WorkloadNode(w.ref, f"{w.service}.{w.namespace}", w.identity)
            node.running = w.ref in running
        return nodes

    def sample(self) -> Sample:
        """Scrape every sidecar now (kept in the history for windowed rates)."""
        return self.history.sample(self.sidecars(), self.trust_domain)

    def traffic(
        self, window: float
    ) -> tuple[Sample, float | None, dict[tuple[str, str], EdgeCounts], dict[tuple[str, str], float]]:
        """The latest sample, the window's span, its counts and rates (see TrafficHistory.window)."""
        latest = self.sample()
        return (latest, *self.history.window(latest, window))

    def now(self) -> float:
        return time.time()
