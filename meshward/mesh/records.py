"""What a running local mesh records about itself: ``<state>/mesh/run.json``.

The runner (``meshward up``) rewrites it atomically whenever something changes; ``status`` and
``down`` read it. It holds every pid the runner started (each a process-group leader), so
``down`` can stop them even if the runner itself was killed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from meshward.identity.keys import write_public

__all__ = ["GatewayRecord", "RunRecord", "WorkloadRecord", "mesh_dir", "read_run", "run_path", "write_run"]


def mesh_dir(state_dir: Path) -> Path:
    return state_dir / "mesh"


def run_path(state_dir: Path) -> Path:
    return mesh_dir(state_dir) / "run.json"


@dataclass
class WorkloadRecord:
    name: str
    namespace: str
    service: str
    identity: str  # SPIFFE URI
    app: str | None = None  # HOST:PORT of the app (None: no app port)
    inbound: str | None = None
    outbound: str | None = None
    admin: str | None = None
    pid: int | None = None  # the app's process (group leader)
    sidecar_pid: int | None = None
    ready: bool = False
    state: str = "starting"  # starting | ready | running | restarting | succeeded | failed | stopped
    type: str = "Service"  # Service | Job (a batch job or client: runs to completion)
    restarts: int = 0
    last_exit: int | None = None
    message: str = ""
    sidecar_dir: str = ""
    address: str | None = None  # its network namespace's IP (isolation: netns)
    netns: str | None = None  # its network namespace's name (isolation: netns)
    app_uid: int | None = None  # the app's user (isolation: netns)
    version: str | None = None  # the Workload's ``version`` label (one service, several versions)
    sidecar_workers: int = 1  # the Workload's spec.sidecar.workers
    sidecar_worker_pids: list[int] = field(default_factory=list)  # with several workers

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class GatewayRecord:
    """What ``status`` shows of a gateway (part of the run record)."""

    name: str
    namespace: str
    identity: str  # SPIFFE URI
    address: str | None = None  # where outside callers connect (HOST:PORT)
    scheme: str = "http"
    admin: str | None = None
    pid: int | None = None
    ready: bool = False
    state: str = "starting"
    restarts: int = 0
    message: str = ""

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class RunRecord:
    supervisor_pid: int
    mesh_file: str
    state: str = "starting"  # starting | running | failed | stopping
    error: str = ""
    control_url: str = ""
    control_pid: int | None = None
    control_managed: bool = True  # False: `up` reused a control plane it did not start
    control_restarts: int = 0
    workloads: list[WorkloadRecord] = field(default_factory=list)
    gateways: list[GatewayRecord] = field(default_factory=list)
    isolation_tag: str = ""  # the network namespaces' tag (isolation: netns), for teardown

    def pgids(self) -> list[int]:
        """Every process group the runner started (apps first, then sidecars, then control)."""
        apps = [w.pid for w in self.workloads if w.pid]
        sidecars = [w.sidecar_pid for w in self.workloads if w.sidecar_pid]
        control = [self.control_pid] if self.control_pid and self.control_managed else []
        gateways = [g.pid for g in self.gateways if g.pid]
        return [p for p in [*apps, *gateways, *sidecars, *control] if p]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        names = {f.name for f in fields(WorkloadRecord)}
        workloads = [
            WorkloadRecord(**{k: v for k, v in w.items() if k in names}) for w in data.get("workloads", [])
        ]
        gw_names = {f.name for f in fields(GatewayRecord)}
        gateways = [
            GatewayRecord(**{k: v for k, v in g.items() if k in gw_names}) for g in data.get("gateways", [])
        ]
        top = {f.name for f in fields(cls)} - {"workloads", "gateways"}
        return cls(**{k: v for k, v in data.items() if k in top}, workloads=workloads, gateways=gateways)


def read_run(state_dir: Path) -> RunRecord | None:
    try:
        return RunRecord.from_json(json.loads(run_path(state_dir).read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def write_run(state_dir: Path, record: RunRecord) -> None:
    write_public(run_path(state_dir), (json.dumps(record.to_json(), indent=2) + "\n").encode())
