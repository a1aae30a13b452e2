"""``meshward up``: run a whole mesh on this machine and keep it running.

Order of a start, and why:

1. Validate the mesh file as a whole (nothing starts if it is refused).
2. ``meshward init`` the state if needed, with the file's ``Mesh`` trust domain.
3. Start the control plane (or reuse one already serving this state) and apply the file.
4. For each ``Workload``, in parallel: a join token for its identity → its sidecar (which makes
   its key and CSR, gets its SVID and config, and binds its listeners) → only then the app's
   command, with ``HTTP_PROXY`` pointing at the sidecar's outbound listener → the app's
   readiness probe.

A workload that fails to start (or to become ready) fails alone and is retried with backoff;
the rest of the mesh runs (``up --strict``: the whole mesh stops instead). A ``type: Job``
Workload (a batch job or client: no port, no readiness wait) runs to completion; its
``restartPolicy`` (Kubernetes' meanings) says whether it runs again.

Then it watches: an app, sidecar or control plane that exits is restarted with exponential
backoff (a sidecar on the same ports, so its app's ``HTTP_PROXY`` stays right), and the restart
is recorded for ``meshward status``. SIGINT/SIGTERM stop apps, then sidecars (they unregister),
then the control plane, each process group as a whole. Workloads a later ``apply`` adds, changes
or removes are started, restarted or stopped by :mod:`meshward.mesh.reconcile`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshward.control.client import operator_client, read_control_info
from meshward.control.operations import LocalConfig, RemoteConfig
from meshward.identity.bootstrap import CaSetupRefused, init_mesh
from meshward.identity.issuance import IdentityService
from meshward.identity.spiffe import SpiffeId
from meshward.identity.state import MeshState
from meshward.isolation.plan import IsolationPlan
from meshward.mesh.gateway import GatewayProcess
from meshward.mesh.processes import Child, restart_delay, start_child, stop_groups
from meshward.mesh.reconcile import Reconciler
from meshward.mesh.records import GatewayRecord, RunRecord, WorkloadRecord, mesh_dir, write_run
from meshward.mesh.scrape import write_targets
from meshward.mesh.status import align_columns
from meshward.mesh.workload import (
    CONTROL_PORT,
    START_TIMEOUT,
    MeshError,
    WorkloadRunner,
    free_port,
    port_free,
    tail,
    wait_until,
)
from meshward.resources import Resource
from meshward.resources.gateway import Gateway
from meshward.resources.loader import load_file
from meshward.resources.mesh import Mesh, Workload

__all__ = ["CONTROL_PORT", "MeshError", "MeshSupervisor", "format_table"]


class MeshSupervisor:
    """Runs one mesh file: see the module docstring."""

    def __init__(
        self,
        state: MeshState,
        mesh_file: Path,
        control_port: int = CONTROL_PORT,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.state = state
        self.mesh_file = mesh_file.resolve()
        self.cwd = Path.cwd()  # apps run where `meshward up` runs (so `python -m pkg.mod` works)
        self.stopping = threading.Event()
        self.stop_requested = False
        self.control: Child | None = None
        self.control_url = ""
        self.wanted_control_port = control_port  # 0: any free port
        self.control_port = 0
        self.control_failures = 0
        self.next_control_start = 0.0
        self.runners: list[WorkloadRunner] = []
        self.gateways: list[GatewayProcess] = []
        self.control_host = "127.0.0.1"  # isolation: the bridge's address (namespaces reach it there)
        self.isolation: IsolationPlan | None = None
        self.record = RunRecord(supervisor_pid=os.getpid(), mesh_file=str(self.mesh_file))
        self._save_lock = threading.Lock()
        self._started = time.monotonic()
        self._log = log or (lambda line: print(f"meshward up: {line}", file=sys.stderr, flush=True))
        self.resources: list[Resource[Any]] = []
        self.identity: IdentityService
        self.reconciler: Reconciler | None = None
        self.strict = False  # `up --strict`: a workload that fails to start stops the whole mesh

    def log(self, line: str) -> None:
        self._log(f"[{time.monotonic() - self._started:5.1f}s] {line}")

    def save(self) -> None:
        with self._save_lock:
            write_run(self.state.path, self.record)
            write_targets(self.state.path, self.record)  # Prometheus file_sd follows every change

    # -- start -----------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Validate the file and initialize the state; nothing runs yet."""
        self.resources = load_file(self.mesh_file)
        meshes = [r for r in self.resources if isinstance(r, Mesh)]
        trust_domain = meshes[0].spec.trust_domain if meshes else None
        if not self.state.exists():
            try:
                init_mesh(self.state, trust_domain)
            except CaSetupRefused as exc:
                raise MeshError(f"{exc} (with `meshward init --state {self.state.path} --force`)") from None
            self.log(f"initialized mesh {self.state.trust_domain!r} in {self.state.path}")
        elif trust_domain and trust_domain != self.state.trust_domain:
            raise MeshError(
                f"{self.mesh_file}: trustDomain {trust_domain!r} differs from the mesh in {self.state.path} "
                f"({self.state.trust_domain!r}); use another --state or `meshward init --force`"
            )
        mesh_dir(self.state.path).mkdir(parents=True, exist_ok=True)
        self.identity = IdentityService(self.state)

    def launch_control(self) -> None:
        """Start the control plane process (or adopt one already serving this state)."""
        existing = read_control_info(self.state.path)
        if existing is not None and self.control is None and not self.control_url:
            self.record.control_managed = False
            self.control_url, self.record.control_url = existing.url, existing.url
            self.record.control_pid = existing.pid
            self.log(f"using the control plane already serving this state: {existing.url}")
            return
        if not self.control_port:
            wanted = self.wanted_control_port
            self.control_port = wanted if wanted and port_free(wanted) else free_port()
        args = [sys.executable, "-m", "meshward.control", "--state", str(self.state.path)]
        args += ["--listen", f"{self.control_host}:{self.control_port}"]
        self.control = start_child("control", args, mesh_dir(self.state.path) / "control.log")
        self.control_url = self.record.control_url = f"https://{self.control_host}:{self.control_port}"
        self.record.control_pid = self.control.pid
        self.save()

    def await_control(self) -> None:
        control = self.control
        if control is None:
            return

        def up() -> bool:
            if control.exit_code() is not None:
                raise MeshError(f"the control plane exited: {tail(control.log)}")
            info = read_control_info(self.state.path)
            return info is not None and info.pid == control.pid

        wait_until(up, START_TIMEOUT, "the control plane", self.stopping)
        self.log(f"control plane serving on {self.control_url}")

    def start_control(self) -> None:
        self.launch_control()
        self.await_control()

    def apply(self) -> dict[str, Any]:
        """Through the running control plane, or (before it starts) on the store directly."""
        text = self.mesh_file.read_text(encoding="utf-8")
        client = operator_client(self.state)
        if client is None:
            return LocalConfig(self.state).apply(text, str(self.mesh_file), dry_run=False)
        with client:
            return RemoteConfig(client).apply(text, str(self.mesh_file), dry_run=False)

    def start(self) -> None:
        """Everything up to all-ready; raises :class:`MeshError` (after stopping what started).

        The file is applied first (so the control plane starts with it); the control plane and
        the sidecars then start together: a sidecar retries its CSR until the control plane is up.
        """
        try:
            self.save()
            result = self.apply()
            changed = [c for c in result["changes"] if c["action"] != "unchanged"]
            self.log(
                f"applied {self.mesh_file.name}: generation {result['generation']} ({len(changed)} changed)"
            )
            td = self.state.trust_domain
            for w in (r for r in self.resources if isinstance(r, Workload)):
                ns = w.metadata.namespace
                rec = WorkloadRecord(w.metadata.name, ns, w.service, SpiffeId(td, ns, w.service_account).uri)
                self.record.workloads.append(rec)
                self.runners.append(WorkloadRunner(self, w, rec))
            self.isolate()
            self.launch_control()
            errors: list[str] = []

            def start_one(runner: WorkloadRunner) -> None:
                try:
                    runner.start()
                except MeshError as exc:
                    errors.append(str(exc))

            # Services first, then jobs (batch jobs and clients call the services once they are up).
            for group in ([r for r in self.runners if not r.job], [r for r in self.runners if r.job]):
                threads = [threading.Thread(target=start_one, args=(r,), daemon=True) for r in group]
                for t in threads:
                    t.start()
                self.await_control()
                for t in threads:
                    t.join()
            if self.stopping.is_set():
                raise MeshError("stopped while starting")
            if errors and self.strict:
                raise MeshError(errors[0])
            for error in errors:  # that workload failed alone; it is retried with backoff
                self.log(f"{error} (the rest of the mesh keeps running; `up --strict` stops it instead)")
            self.start_gateways()
            self.record.state = "running"
            self.save()
            self.reconciler = Reconciler(self)
        except BaseException as exc:
            self.record.state, self.record.error = "failed", str(exc)
            self.save()
            self.stop()
            raise

    def isolate(self) -> None:
        """``isolation: netns``: namespaces, bridge, users and rules for the isolated workloads."""
        spec = next((r.spec for r in self.resources if isinstance(r, Mesh)), None)
        default = spec.isolation if spec is not None else "none"
        isolated = [r for r in self.runners if (r.workload.spec.isolation or default) == "netns"]
        if not isolated:
            return
        from meshward.isolation import network
        from meshward.isolation.plan import ADMIN_PORT, INBOUND_PORT, OUTBOUND_PORT, hosts_file, make_plan

        try:
            network.require_root()
            plan = make_plan(
                str(self.state.path),
                [(r.record.ref, r.app_port) for r in isolated],
                spec.interception.exclude_outbound_ports if spec else (),
                spec.interception.exclude_outbound_cidrs if spec else (),
                network.taken_subnets(),
            )
            self.record.isolation_tag = plan.tag
            self.isolation = plan
            self.save()
            network.apply_plan(plan)
        except (network.IsolationError, ValueError) as exc:
            raise MeshError(str(exc)) from None
        self.control_host = plan.gateway
        addresses: dict[str, str] = {}
        for runner in self.runners:
            ns_plan = plan.of(runner.record.ref)
            if ns_plan is None:  # an unisolated workload: reachable from the namespaces too
                runner.listeners["inbound"] = f"{plan.gateway}:0"
                addresses[runner.record.ref] = plan.gateway
                continue
            runner.isolation = ns_plan
            runner.record.address = ns_plan.address
            runner.record.netns, runner.record.app_uid = ns_plan.netns, ns_plan.uid
            runner.listeners = {
                "inbound": f"{ns_plan.address}:{INBOUND_PORT}",
                "outbound": f"127.0.0.1:{OUTBOUND_PORT}",
                "admin": f"{ns_plan.address}:{ADMIN_PORT}",
            }
            addresses[runner.record.ref] = ns_plan.address
        services = [
            (r.workload.service, r.workload.metadata.namespace, addresses[r.record.ref]) for r in self.runners
        ]
        for ns_plan in plan.namespaces:
            network.write_hosts(ns_plan, hosts_file(services))
        self.log(
            f"isolation: {len(plan.namespaces)} network namespaces on bridge {plan.bridge} ({plan.subnet})"
        )

    def start_gateways(self) -> None:
        """One gateway process per ``Gateway`` resource, once the workloads are ready."""
        td = self.state.trust_domain
        for g in (r for r in self.resources if isinstance(r, Gateway)):
            ns, name = g.metadata.namespace, g.metadata.name
            rec = GatewayRecord(name, ns, SpiffeId(td, ns, name).uri)
            self.record.gateways.append(rec)
            proc = GatewayProcess(
                self.identity,
                self.state.path,
                self.state.bundle_path,
                self.control_url,
                rec,
                g.spec.tls is not None,
            )
            self.gateways.append(proc)
            proc.start(self.stopping)
            self.log(f"gateway {rec.ref} listening on {rec.scheme}://{rec.address}")
        self.save()

    # -- run -------------------------------------------------------------------------------------
    def check_control(self) -> None:
        if self.control is None or (code := self.control.exit_code()) is None:
            return
        now = time.monotonic()
        if not self.next_control_start:
            self.record.control_restarts += 1
            self.next_control_start = now + restart_delay(self.control_failures)
            self.control_failures += 1
            self.log(f"control plane exited ({code}); restarting in {self.next_control_start - now:.1f}s")
            self.save()
        if now >= self.next_control_start:
            try:
                self.start_control()
                self.next_control_start = 0.0
                self.log("control plane restarted")
            except MeshError as exc:
                self.log(str(exc))
                self.next_control_start = time.monotonic() + restart_delay(self.control_failures)
                self.control_failures += 1

    def supervise(self, interval: float = 0.2) -> None:
        """Keep everything running until :meth:`request_stop`."""
        while not self.stopping.wait(interval):
            self.check_control()
            if self.reconciler is not None:
                self.reconciler.check()
            for runner in self.runners:
                if self.stopping.is_set():
                    break
                runner.check()
            for gateway in self.gateways:
                if not self.stopping.is_set() and gateway.check(self.stopping):
                    self.save()

    def request_stop(self) -> None:
        """Ctrl-C / SIGTERM / `meshward down`: stop (distinct from stopping after a failure)."""
        self.stop_requested = True
        self.stopping.set()

    def stop(self) -> None:
        """Apps, then sidecars, then the control plane; each group as a whole."""
        self.stopping.set()
        self.record.state = "stopping"
        with contextlib.suppress(OSError):
            self.save()
        for gateway in self.gateways:
            gateway.stop()
        runners = self.runners + (self.reconciler.pending() if self.reconciler is not None else [])
        apps = [r.app for r in runners if r.app is not None]
        stop_groups([c.pid for c in apps], 5.0, [c.popen for c in apps])
        sidecars = [r.sidecar for r in runners if r.sidecar is not None]
        stop_groups([c.pid for c in sidecars], 5.0, [c.popen for c in sidecars])
        if self.control is not None:
            self.control.stop()
        if self.isolation is not None:
            from meshward.isolation.network import IsolationError, teardown

            try:
                teardown(self.isolation.tag)
            except IsolationError as exc:
                self.log(f"isolation teardown: {exc} (run `meshward down --force`)")
        for rec in self.record.workloads:
            rec.ready, rec.state = False, "stopped"
        with contextlib.suppress(OSError):
            (mesh_dir(self.state.path) / "run.json").unlink()
            write_targets(self.state.path, None)
        with contextlib.suppress(Exception):
            self.identity.close()


def format_table(record: RunRecord, state_dir: Path) -> str:
    """The table ``up`` prints: workloads, identities and ports."""
    rows = [("WORKLOAD", "IDENTITY", "APP", "INBOUND", "OUTBOUND (HTTP_PROXY)", "ADMIN")]
    for w in record.workloads:
        rows.append((w.ref, w.identity, w.app or "-", w.inbound or "-", w.outbound or "-", w.admin or "-"))
    return "\n".join([*align_columns(rows), f"control plane {record.control_url}  (state {state_dir})"])
