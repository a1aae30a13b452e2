"""``meshward up``: run a whole mesh on this machine and keep it running.

Order of a start, and why:

1. Validate the mesh file as a whole (nothing starts if it is refused).
2. ``meshward init`` the state if needed, with the file's ``Mesh`` trust domain.
3. Start the control plane (or reuse one already serving this state) and apply the file.
4. For each ``Workload``, in parallel: a join token for its identity → its sidecar (which makes
   its key and CSR, gets its SVID and config, and binds its listeners) → only then the app's
   command, with ``HTTP_PROXY`` pointing at the sidecar's outbound listener → the app's
   readiness probe.

Then it watches: an app, sidecar or control plane that exits is restarted with exponential
backoff (a sidecar on the same ports, so its app's ``HTTP_PROXY`` stays right), and the restart
is recorded for ``meshward status``. SIGINT/SIGTERM stop apps, then sidecars (they unregister),
then the control plane, each process group as a whole.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshward.control.client import operator_client, read_control_info
from meshward.control.operations import LocalConfig, RemoteConfig
from meshward.identity.bootstrap import init_mesh
from meshward.identity.issuance import IdentityService
from meshward.identity.state import MeshState
from meshward.mesh.processes import Child, start_child, stop_groups
from meshward.mesh.records import RunRecord, WorkloadRecord, mesh_dir, write_run
from meshward.resources import Resource
from meshward.resources.loader import load_file
from meshward.resources.mesh import Mesh, Workload, parse_duration

__all__ = ["CONTROL_PORT", "MeshError", "MeshSupervisor", "format_table", "free_port", "sidecar_command"]

CONTROL_PORT = 15012
START_TIMEOUT = 20.0
MAX_RESTART_DELAY = 30.0
NO_PROXY = "127.0.0.1,localhost,::1"


class MeshError(Exception):
    """The mesh cannot start (the message says why and whose fault it is)."""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait(predicate: Callable[[], Any], timeout: float, what: str, stop: threading.Event) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise MeshError(f"timed out after {timeout:.0f}s waiting for {what}" if not stop.is_set() else "stopped")


def _tail(log: Path, lines: int = 5) -> str:
    with contextlib.suppress(OSError):
        text = log.read_text(errors="replace").strip().splitlines()[-lines:]
        return " | ".join(text)
    return ""


def sidecar_command(
    *,
    control_url: str,
    bundle: Path,
    identity: str,
    workload: str,
    sidecar_id: str,
    directory: Path,
    app: str | None,
    listeners: dict[str, str],
    parent_pid: int,
) -> list[str]:
    """The command line of a control-plane-fed sidecar (``meshward.proxy.controlclient``)."""
    args = [sys.executable, "-m", "meshward.proxy.controlclient", "--control", control_url]
    args += ["--bundle", str(bundle), "--id", identity, "--workload", workload, "--sidecar-id", sidecar_id]
    args += ["--dir", str(directory), "--ready-file", str(directory / "ready.json")]
    args += ["--parent-pid", str(parent_pid)]
    if app:
        args += ["--app", app]
    for name in ("inbound", "outbound", "admin"):
        args += [f"--{name}", listeners.get(name, "127.0.0.1:0")]
    return args


class _WorkloadRunner:
    """One workload: its sidecar and its app, started in order and restarted when they exit."""

    def __init__(self, mesh: MeshSupervisor, workload: Workload, record: WorkloadRecord) -> None:
        self.mesh, self.workload, self.record = mesh, workload, record
        self.sidecar: Child | None = None
        self.app: Child | None = None
        self.directory = mesh.state.path / "sidecars" / f"{record.namespace}.{record.name}"
        self.listeners = {"inbound": "127.0.0.1:0", "outbound": "127.0.0.1:0", "admin": "127.0.0.1:0"}
        self.app_port = workload.spec.port or free_port()
        self.sidecar_failures = 0
        self.app_failures = 0
        self.next_app_start = 0.0
        self.next_sidecar_start = 0.0
        record.sidecar_dir = str(self.directory)
        record.app = f"127.0.0.1:{self.app_port}" if workload.spec.command or workload.spec.port else None

    # -- sidecar ---------------------------------------------------------------------------------
    def start_sidecar(self) -> None:
        mesh, rec = self.mesh, self.record
        sid = f"{rec.namespace}/{self.workload.service_account}"
        token = mesh.identity.create_token(sid, dt.timedelta(minutes=10))
        ready_file = self.directory / "ready.json"
        ready_file.unlink(missing_ok=True)
        args = sidecar_command(
            control_url=mesh.control_url,
            bundle=mesh.state.bundle_path,
            identity=sid,
            workload=rec.ref,
            sidecar_id=rec.ref,
            directory=self.directory,
            app=rec.app,
            listeners=self.listeners,
            parent_pid=os.getpid(),
        )
        env = dict(os.environ, MESHWARD_TOKEN=token, PYTHONUNBUFFERED="1")
        self.sidecar = start_child(f"sidecar {rec.ref}", args, self.directory / "sidecar.log", env)
        rec.sidecar_pid = self.sidecar.pid
        mesh.save()
        sidecar = self.sidecar

        def ready() -> dict[str, Any] | None:
            code = sidecar.exit_code()
            if code is not None:
                raise MeshError(f"sidecar of {rec.ref} exited ({code}): {_tail(sidecar.log)}")
            if not ready_file.exists():
                return None
            import json

            with contextlib.suppress(ValueError):
                info: dict[str, Any] = json.loads(ready_file.read_text())
                return info
            return None

        info = _wait(ready, START_TIMEOUT, f"the sidecar of {rec.ref}", mesh.stopping)
        mesh.log(f"{rec.ref}: sidecar ready (generation {info.get('generation')})")
        for name in ("inbound", "outbound", "admin"):
            if info.get(name):
                self.listeners[name] = str(info[name])  # a restart binds the same ports
                setattr(rec, name, str(info[name]))

    # -- app -------------------------------------------------------------------------------------
    def app_env(self) -> dict[str, str]:
        proxy = f"http://{self.record.outbound}"
        env = dict(os.environ)
        env.update(self.workload.spec.env)
        env.update(
            HTTP_PROXY=proxy,
            http_proxy=proxy,
            NO_PROXY=NO_PROXY,
            no_proxy=NO_PROXY,
            PORT=str(self.app_port),
            MESHWARD_WORKLOAD=self.record.ref,
            MESHWARD_IDENTITY=self.record.identity,
            PYTHONUNBUFFERED="1",
        )
        return env

    def start_app(self) -> None:
        spec, rec = self.workload.spec, self.record
        if not spec.command:
            rec.ready, rec.state = True, "ready"
            return
        command = [arg.replace("{port}", str(self.app_port)) for arg in spec.command]
        if command[0] in ("python", "python3"):
            command[0] = sys.executable  # the mesh's own interpreter, not whatever is on PATH
        cwd = (self.mesh.mesh_file.parent / spec.workdir) if spec.workdir else self.mesh.cwd
        self.app = start_child(f"app {rec.ref}", command, self.directory / "app.log", self.app_env(), cwd)
        rec.pid = self.app.pid
        self.mesh.save()
        timeout = parse_duration(spec.readiness.timeout)
        app = self.app

        def ready() -> bool:
            code = app.exit_code()
            if code is not None:
                raise MeshError(f"app of {rec.ref} exited ({code}) before it was ready: {_tail(app.log)}")
            return self._probe()

        _wait(ready, timeout, f"the app of {rec.ref} to be ready", self.mesh.stopping)
        rec.ready, rec.state, rec.message = True, "ready", ""
        self.mesh.save()
        self.mesh.log(f"{rec.ref}: ready")

    def _probe(self) -> bool:
        path = self.workload.spec.readiness.http_get
        if path is None:
            import socket

            try:
                with socket.create_connection(("127.0.0.1", self.app_port), timeout=0.5):
                    return True
            except OSError:
                return False
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via the sidecar
        try:
            with opener.open(f"http://127.0.0.1:{self.app_port}{path}", timeout=1.0) as resp:
                return 200 <= int(resp.status) < 400
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def start(self) -> None:
        try:
            self.start_sidecar()
            self.start_app()
        except MeshError as exc:
            self.record.state, self.record.message = "failed", str(exc)
            self.mesh.save()
            raise

    # -- supervision -----------------------------------------------------------------------------
    @staticmethod
    def _delay(failures: int) -> float:
        return float(min(MAX_RESTART_DELAY, 0.5 * 2**failures))

    def check(self) -> None:
        """Called periodically: restart whatever exited (sidecar first: the app needs it)."""
        rec, now = self.record, time.monotonic()
        if self.sidecar is not None and (code := self.sidecar.exit_code()) is not None:
            rec.ready, rec.state = False, "restarting"
            rec.message = f"sidecar exited ({code}): {_tail(self.sidecar.log, 2)}"
            rec.restarts += 1
            self.sidecar = None
            self.next_sidecar_start = now + self._delay(self.sidecar_failures)
            self.sidecar_failures += 1
            self.mesh.save()
            self.mesh.log(f"{rec.ref}: {rec.message}; restarting in {self.next_sidecar_start - now:.1f}s")
        if self.sidecar is None and now >= self.next_sidecar_start:
            try:
                self.start_sidecar()
                self.mesh.log(f"{rec.ref}: sidecar restarted")
                if self.app is not None:
                    rec.ready, rec.state = True, "ready"
                    self.mesh.save()
            except MeshError as exc:
                rec.message = str(exc)
                self.mesh.save()
                return
        if self.app is not None and (code := self.app.exit_code()) is not None:
            rec.ready, rec.state, rec.last_exit = False, "restarting", code
            rec.restarts += 1
            rec.message = f"app exited ({code}): {_tail(self.app.log, 2)}"
            self.app = None
            self.next_app_start = now + self._delay(self.app_failures)
            self.app_failures += 1
            self.mesh.save()
            self.mesh.log(f"{rec.ref}: {rec.message}; restarting in {self.next_app_start - now:.1f}s")
        if (
            self.app is None
            and self.workload.spec.command
            and self.sidecar is not None
            and now >= self.next_app_start
            and not rec.ready
        ):
            try:
                self.start_app()
                self.mesh.log(f"{rec.ref}: app restarted")
            except MeshError as exc:
                rec.message = str(exc)
                if self.app is not None:
                    self.app.stop(1.0)
                    self.app = None
                self.next_app_start = time.monotonic() + self._delay(self.app_failures)
                self.app_failures += 1
                self.mesh.save()

    def children(self) -> list[Child]:
        return [c for c in (self.app, self.sidecar) if c is not None]


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
        self.control: Child | None = None
        self.control_url = ""
        self.wanted_control_port = control_port  # 0: any free port
        self.control_port = 0
        self.control_failures = 0
        self.next_control_start = 0.0
        self.runners: list[_WorkloadRunner] = []
        self.record = RunRecord(supervisor_pid=os.getpid(), mesh_file=str(self.mesh_file))
        self._save_lock = threading.Lock()
        self._started = time.monotonic()
        self._log = log or (lambda line: print(f"meshward up: {line}", file=sys.stderr, flush=True))
        self.resources: list[Resource[Any]] = []
        self.identity: IdentityService

    def log(self, line: str) -> None:
        self._log(f"[{time.monotonic() - self._started:5.1f}s] {line}")

    def save(self) -> None:
        with self._save_lock:
            write_run(self.state.path, self.record)

    # -- start -----------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Validate the file and initialize the state; nothing runs yet."""
        self.resources = load_file(self.mesh_file)
        meshes = [r for r in self.resources if isinstance(r, Mesh)]
        trust_domain = meshes[0].spec.trust_domain if meshes else None
        if not self.state.exists():
            init_mesh(self.state, trust_domain)
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
            self.control_port = wanted if wanted and _port_free(wanted) else free_port()
        args = [sys.executable, "-m", "meshward.control", "--state", str(self.state.path)]
        args += ["--listen", f"127.0.0.1:{self.control_port}"]
        self.control = start_child("control", args, mesh_dir(self.state.path) / "control.log")
        self.control_url = self.record.control_url = f"https://127.0.0.1:{self.control_port}"
        self.record.control_pid = self.control.pid
        self.save()

    def await_control(self) -> None:
        control = self.control
        if control is None:
            return

        def up() -> bool:
            if control.exit_code() is not None:
                raise MeshError(f"the control plane exited: {_tail(control.log)}")
            info = read_control_info(self.state.path)
            return info is not None and info.pid == control.pid

        _wait(up, START_TIMEOUT, "the control plane", self.stopping)
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
            self.launch_control()
            td = self.state.trust_domain
            for w in (r for r in self.resources if isinstance(r, Workload)):
                ns = w.metadata.namespace
                rec = WorkloadRecord(
                    w.metadata.name, ns, w.service, f"spiffe://{td}/ns/{ns}/sa/{w.service_account}"
                )
                self.record.workloads.append(rec)
                self.runners.append(_WorkloadRunner(self, w, rec))
            errors: list[str] = []

            def start_one(runner: _WorkloadRunner) -> None:
                try:
                    runner.start()
                except MeshError as exc:
                    errors.append(str(exc))

            threads = [threading.Thread(target=start_one, args=(r,), daemon=True) for r in self.runners]
            for t in threads:
                t.start()
            self.await_control()
            for t in threads:
                t.join()
            if self.stopping.is_set():
                raise MeshError("stopped while starting")
            if errors:
                raise MeshError(errors[0])
            self.record.state = "running"
            self.save()
        except BaseException as exc:
            self.record.state, self.record.error = "failed", str(exc)
            self.save()
            self.stop()
            raise

    # -- run -------------------------------------------------------------------------------------
    def check_control(self) -> None:
        if self.control is None or (code := self.control.exit_code()) is None:
            return
        now = time.monotonic()
        if not self.next_control_start:
            self.record.control_restarts += 1
            self.next_control_start = now + min(MAX_RESTART_DELAY, 0.5 * 2**self.control_failures)
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
                self.next_control_start = time.monotonic() + min(
                    MAX_RESTART_DELAY, 0.5 * 2**self.control_failures
                )
                self.control_failures += 1

    def supervise(self, interval: float = 0.2) -> None:
        """Keep everything running until :meth:`request_stop`."""
        while not self.stopping.wait(interval):
            self.check_control()
            for runner in self.runners:
                if self.stopping.is_set():
                    break
                runner.check()

    def request_stop(self) -> None:
        self.stopping.set()

    def stop(self) -> None:
        """Apps, then sidecars, then the control plane; each group as a whole."""
        self.stopping.set()
        self.record.state = "stopping"
        with contextlib.suppress(OSError):
            self.save()
        apps = [r.app for r in self.runners if r.app is not None]
        stop_groups([c.pid for c in apps], 5.0, [c.popen for c in apps])
        sidecars = [r.sidecar for r in self.runners if r.sidecar is not None]
        stop_groups([c.pid for c in sidecars], 5.0, [c.popen for c in sidecars])
        if self.control is not None:
            self.control.stop()
        for rec in self.record.workloads:
            rec.ready, rec.state = False, "stopped"
        with contextlib.suppress(OSError):
            (mesh_dir(self.state.path) / "run.json").unlink()
        with contextlib.suppress(Exception):
            self.identity.close()


def format_table(record: RunRecord, state_dir: Path) -> str:
    """The table ``up`` prints: workloads, identities and ports."""
    rows = [("WORKLOAD", "IDENTITY", "APP", "INBOUND", "OUTBOUND (HTTP_PROXY)", "ADMIN")]
    for w in record.workloads:
        rows.append((w.ref, w.identity, w.app or "-", w.inbound or "-", w.outbound or "-", w.admin or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    return "\n".join([*lines, f"control plane {record.control_url}  (state {state_dir})"])
