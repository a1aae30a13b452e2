"""One workload of a local mesh: its sidecar, then its app, restarted when either exits.

Also the helpers the runner shares: free ports, bounded waits, log tails, and the sidecar's
command line.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from meshward.mesh.errors import MeshError
from meshward.mesh.polling import wait_until
from meshward.mesh.processes import Child, restart_delay, start_child
from meshward.mesh.records import WorkloadRecord
from meshward.resources.mesh import Workload, parse_duration

if TYPE_CHECKING:
    from meshward.identity.issuance import IdentityService
    from meshward.identity.state import MeshState
    from meshward.isolation.plan import NamespacePlan

__all__ = [
    "CONTROL_PORT",
    "NO_PROXY",
    "START_TIMEOUT",
    "MeshContext",
    "MeshError",
    "WorkloadRunner",
    "free_port",
    "port_free",
    "sidecar_command",
    "tail",
    "wait_ready_file",
    "wait_until",
]

CONTROL_PORT = 15012
START_TIMEOUT = 20.0
NO_PROXY = "127.0.0.1,localhost,::1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def tail(log: Path, lines: int = 5) -> str:
    with contextlib.suppress(OSError):
        text = log.read_text(errors="replace").strip().splitlines()[-lines:]
        return " | ".join(text)
    return ""


def wait_ready_file(child: Child, ready_file: Path, what: str, stopping: threading.Event) -> dict[str, Any]:
    """Wait (bounded) for ``child`` to write its ready file (JSON); fail if it exits first."""

    def ready() -> dict[str, Any] | None:
        code = child.exit_code()
        if code is not None:
            raise MeshError(f"{what} exited ({code}): {tail(child.log)}")
        if not ready_file.exists():
            return None
        with contextlib.suppress(ValueError):
            info: dict[str, Any] = json.loads(ready_file.read_text())
            return info
        return None

    found: dict[str, Any] = wait_until(ready, START_TIMEOUT, what, stopping)
    return found


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
    workers: int = 1,
) -> list[str]:
    """The command line of a control-plane-fed sidecar: ``meshward proxy --control``
    (:mod:`meshward.proxy.runner`), logging at INFO into the sidecar's log file."""
    args = [sys.executable, "-m", "meshward", "proxy", "--control", control_url, "--log-level", "info"]
    args += ["--bundle", str(bundle), "--id", identity, "--workload", workload, "--sidecar-id", sidecar_id]
    args += ["--dir", str(directory), "--ready-file", str(directory / "ready.json")]
    args += ["--parent-pid", str(parent_pid)]
    if app:
        args += ["--app", app]
    for name in ("inbound", "outbound", "admin"):
        args += [f"--{name}", listeners.get(name, "127.0.0.1:0")]
    if workers > 1:
        args += ["--workers", str(workers)]
    return args


class MeshContext(Protocol):
    """What a workload needs from the mesh that runs it: the supervisor's parts, as a protocol
    (this module never imports :mod:`meshward.mesh.supervisor`, which imports it)."""

    state: MeshState
    identity: IdentityService
    control_url: str
    stopping: threading.Event
    mesh_file: Path
    cwd: Path

    def save(self) -> None: ...
    def log(self, line: str) -> None: ...


class WorkloadRunner:
    """One workload: its sidecar and its app, started in order and restarted when they exit."""

    def __init__(self, mesh: MeshContext, workload: Workload, record: WorkloadRecord) -> None:
        self.mesh, self.workload, self.record = mesh, workload, record
        self.sidecar: Child | None = None
        self.app: Child | None = None
        self.directory = mesh.state.path / "sidecars" / f"{record.namespace}.{record.name}"
        self.listeners = {"inbound": "127.0.0.1:0", "outbound": "127.0.0.1:0", "admin": "127.0.0.1:0"}
        self.job = workload.spec.type == "Job"
        self.app_port = workload.spec.port or (0 if self.job else free_port())
        self.finished = False  # ran to its end and its restartPolicy says not again
        self.isolation: NamespacePlan | None = None  # set by the supervisor in isolation mode
        self.sidecar_failures = 0
        self.app_failures = 0
        self.next_app_start = 0.0
        self.next_sidecar_start = 0.0
        record.sidecar_dir = str(self.directory)
        record.version = workload.metadata.labels.get("version")
        serves = not self.job and (workload.spec.command or workload.spec.port)
        record.app = f"127.0.0.1:{self.app_port}" if serves else None
        record.type = workload.spec.type
        record.sidecar_workers = workload.spec.sidecar.workers

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
            workers=self.workload.spec.sidecar.workers,
        )
        if self.isolation is not None:  # the sidecar runs in the workload's namespace, as root
            args = ["ip", "netns", "exec", self.isolation.netns, *args]
        env = dict(os.environ, MESHWARD_TOKEN=token, PYTHONUNBUFFERED="1")
        self.sidecar = start_child(f"sidecar {rec.ref}", args, self.directory / "sidecar.log", env)
        rec.sidecar_pid = self.sidecar.pid
        mesh.save()
        info = wait_ready_file(self.sidecar, ready_file, f"the sidecar of {rec.ref}", mesh.stopping)
        rec.sidecar_worker_pids = [int(pid) for pid in info.get("worker_pids", [])]
        mesh.save()
        workers = f", {len(rec.sidecar_worker_pids)} workers" if rec.sidecar_worker_pids else ""
        mesh.log(f"{rec.ref}: sidecar ready (generation {info.get('generation')}{workers})")
        for name in ("inbound", "outbound", "admin"):
            if info.get(name):
                self.listeners[name] = str(info[name])  # a restart binds the same ports
                setattr(rec, name, str(info[name]))

    # -- app -------------------------------------------------------------------------------------
    def app_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.workload.spec.env)
        if self.isolation is None:
            proxy = f"http://{self.record.outbound}"
            env.update(HTTP_PROXY=proxy, http_proxy=proxy, NO_PROXY=NO_PROXY, no_proxy=NO_PROXY)
        else:  # transparent interception: the app needs no proxy settings (and gets none)
            for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
                env.pop(name, None)
            env["HOME"] = "/nonexistent"
        env.update(
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
        if self.isolation is not None:  # its namespace, its own user, no capabilities
            uid = str(self.isolation.uid)
            command = [
                "ip", "netns", "exec", self.isolation.netns,
                "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--",
                *command,
            ]  # fmt: skip
        self.app = start_child(f"app {rec.ref}", command, self.directory / "app.log", self.app_env(), cwd)
        rec.pid = self.app.pid
        if self.job:  # a batch job or client: not waited on; it may finish
            rec.ready, rec.state, rec.message = False, "running", ""
            self.mesh.save()
            self.mesh.log(f"{rec.ref}: job started")
            return
        self.mesh.save()
        timeout = parse_duration(spec.readiness.timeout)
        app = self.app

        def ready() -> bool:
            code = app.exit_code()
            if code is not None:
                rec.last_exit = code
                raise MeshError(f"app of {rec.ref} exited ({code}) before it was ready: {tail(app.log)}")
            return self._probe()

        wait_until(ready, timeout, f"the app of {rec.ref} to be ready", self.mesh.stopping)
        rec.ready, rec.state, rec.message = True, "ready", ""
        self.mesh.save()
        self.mesh.log(f"{rec.ref}: ready")

    def _probe(self) -> bool:
        if self.isolation is not None:
            return self._probe_in_namespace(self.isolation.netns)
        path = self.workload.spec.readiness.http_get
        if path is None:
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

    def _probe_in_namespace(self, netns: str) -> bool:
        """The app listens on its namespace's loopback: probe it from inside."""
        from meshward.isolation.network import netns_connect

        path = self.workload.spec.readiness.http_get
        try:
            sock = netns_connect(netns, ("127.0.0.1", self.app_port), 1.0)
        except OSError:
            return False
        with sock:
            if path is None:
                return True
            try:
                sock.sendall(f"GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n".encode())
                status_line = sock.recv(64).split(b"\r\n", 1)[0].split()
                return len(status_line) >= 2 and status_line[1].isdigit() and 200 <= int(status_line[1]) < 400
            except OSError:
                return False

    def start(self) -> None:
        try:
            self.start_sidecar()
            self.start_app()
        except MeshError as exc:
            self.record.state, self.record.message = "failed", str(exc)
            if self.app is not None:  # not ready in time: stopped; `check` retries it with backoff
                self.app.stop(1.0)
                self.app = None
            self.next_app_start = time.monotonic() + self._delay(self.app_failures)
            self.app_failures += 1
            self.mesh.save()
            raise

    # -- supervision -----------------------------------------------------------------------------
    @staticmethod
    def _delay(failures: int) -> float:
        return restart_delay(failures)

    def check(self) -> None:
        """Called periodically: restart whatever exited (sidecar first: the app needs it)."""
        rec, now = self.record, time.monotonic()
        if self.sidecar is not None and (code := self.sidecar.exit_code()) is not None:
            rec.ready, rec.state = False, "restarting"
            rec.message = f"sidecar exited ({code}): {tail(self.sidecar.log, 2)}"
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
                if self.app is not None and not self.job:
                    rec.ready, rec.state = True, "ready"
                    self.mesh.save()
            except MeshError as exc:
                rec.message = str(exc)
                self.mesh.save()
                return
        if self.app is not None and (code := self.app.exit_code()) is not None and self._finished(code):
            return
        if self.app is not None and (code := self.app.exit_code()) is not None:
            rec.ready, rec.state, rec.last_exit = False, "restarting", code
            rec.restarts += 1
            rec.message = f"app exited ({code}): {tail(self.app.log, 2)}"
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
            and not self.finished
            and rec.state != "running"
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

    def _finished(self, code: int) -> bool:
        """The app exited with ``code``: if its restartPolicy says not again, record how it ended."""
        policy = self.workload.spec.restart
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            return False
        rec = self.record
        assert self.app is not None
        rec.ready, rec.last_exit, self.finished = False, code, True
        rec.state = "succeeded" if code == 0 else "failed"
        rec.message = f"exited ({code})" + ("" if code == 0 else f": {tail(self.app.log, 2)}")
        self.app = None
        self.mesh.save()
        self.mesh.log(f"{rec.ref}: {rec.message} (restartPolicy {policy}: not restarted)")
        return True

    def children(self) -> list[Child]:
        return [c for c in (self.app, self.sidecar) if c is not None]
