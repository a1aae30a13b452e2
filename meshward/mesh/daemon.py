"""Running a whole mesh from one process: in the foreground until a signal, or detached.

:func:`run_foreground` starts the mesh (:class:`~meshward.mesh.supervisor.MeshSupervisor`),
reports it ready, supervises it until SIGINT/SIGTERM and then stops it all. :func:`detach`
forks that same runner into its own session (no second interpreter start-up) with its output in
``<state>/mesh/up.log`` and returns once the run record says the mesh runs, or raises
:class:`MeshError` with why it did not start. ``meshward up`` is the command line around both.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from meshward.mesh.records import RunRecord, mesh_dir, read_run
from meshward.mesh.workload import CONTROL_PORT, MeshError

__all__ = ["DETACH_TIMEOUT", "Detached", "OnReady", "detach", "refuse_if_running", "run_foreground"]

DETACH_TIMEOUT = 180.0

#: Called once every workload was started (some may have failed alone): the run record.
OnReady = Callable[[RunRecord], None]


@dataclass(frozen=True, slots=True)
class Detached:
    """A mesh running in the background: its runner's pid, its record once ready, its log."""

    pid: int
    record: RunRecord
    log: Path


def refuse_if_running(state_dir: Path) -> None:
    """Raise :class:`MeshError` if a runner is alive for ``state_dir``."""
    from meshward.control.client import pid_alive

    run = read_run(state_dir)
    if run is not None and pid_alive(run.supervisor_pid):
        raise MeshError(
            f"a mesh is already up in {state_dir} (runner pid {run.supervisor_pid}); `meshward down` first"
        )


def run_foreground(
    state_dir: Path,
    mesh_file: Path,
    control_port: int = CONTROL_PORT,
    strict: bool = False,
    on_ready: OnReady | None = None,
) -> int:
    """Start the mesh, call ``on_ready``, supervise it until SIGINT/SIGTERM, then stop it all.
    Returns 0, or 130 when a signal stopped a start; raises :class:`MeshError` if it cannot start."""
    from meshward.identity.state import MeshState
    from meshward.mesh.supervisor import MeshSupervisor
    from meshward.resources.loader import LoadError

    supervisor = MeshSupervisor(MeshState(state_dir), mesh_file, control_port)
    supervisor.strict = strict

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        supervisor.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        supervisor.prepare()
        supervisor.start()
    except (MeshError, LoadError) as exc:
        if supervisor.stop_requested:
            return 130
        raise MeshError(str(exc)) from None
    if on_ready is not None:
        on_ready(supervisor.record)
    try:
        supervisor.supervise()
    finally:
        supervisor.stop()
    return 0


def detach(
    state_dir: Path,
    mesh_file: Path,
    control_port: int = CONTROL_PORT,
    strict: bool = False,
    on_ready: OnReady | None = None,
    timeout: float = DETACH_TIMEOUT,
) -> Detached:
    """Fork the runner into its own session and wait (bounded) until it is ready. ``on_ready``
    runs in the runner (its output goes to the log)."""
    log = mesh_dir(state_dir) / "up.log"
    if not state_dir.exists():  # private from the start: `init` leaves an existing dir's mode alone
        state_dir.mkdir(mode=0o700, parents=True)
        state_dir.chmod(0o700)  # whatever the umask
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the runner: its own session, output to the log, never returns
        os._exit(_run_detached(state_dir, mesh_file, control_port, log, strict, on_ready))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = read_run(state_dir)
        if run is not None and run.supervisor_pid == pid and run.state in ("running", "failed"):
            if run.state == "failed":
                _reap(pid, 30.0)
                raise MeshError(f"the mesh did not start: {run.error} (log: {log})")
            return Detached(pid, run, log)
        if _reap(pid, 0.0):
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            reason = tail[0].removeprefix("meshward up: ") if tail else "the runner exited"
            raise MeshError(f"the mesh did not start: {reason} (log: {log})")
        time.sleep(0.02)
    os.kill(pid, signal.SIGTERM)
    raise MeshError(f"the mesh was not ready within {timeout:.0f}s; stopping it (log: {log})")


def _run_detached(
    state_dir: Path, mesh_file: Path, control_port: int, log: Path, strict: bool, on_ready: OnReady | None
) -> int:
    """The forked runner's body: its own session, stdio on the log; every error is one log line."""
    code = 1
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        code = run_foreground(state_dir, mesh_file, control_port, strict, on_ready)
        if code == 0:
            print("meshward up: stopped", file=sys.stderr)
    except Exception as exc:  # nothing may escape into the parent's code path
        from meshward.control.operations import ConfigError

        # The user's own mistakes read as one plain line; anything else names its type.
        known = isinstance(exc, ConfigError | MeshError | OSError | ValueError)
        print(
            f"meshward up: {exc}" if known else f"meshward up: {type(exc).__name__}: {exc}", file=sys.stderr
        )
    except BaseException as exc:
        print(f"meshward up: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def _reap(pid: int, timeout: float) -> bool:
    """True once the forked runner has exited (and is collected)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return True
        if done:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
