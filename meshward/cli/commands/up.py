"""``meshward up -f MESH.yaml [--detach]``: run the control plane and every Workload with its sidecar.

In the foreground it prints the table of workloads once all are ready, then keeps them running
(restarting what exits) until Ctrl-C, which stops everything. ``--detach`` forks the same runner
into the background (its log in ``<state>/mesh/up.log``), returns once all are ready, and
``meshward down`` stops it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from meshward.cli.errors import CliError

if TYPE_CHECKING:
    from meshward.identity.state import MeshState

__all__ = ["CONTROL_PORT", "register", "run_foreground"]

#: ``meshward.mesh.workload.CONTROL_PORT`` (a test keeps them equal): the parser is built without
#: importing the supervisor.
CONTROL_PORT = 15012

DETACH_TIMEOUT = 180.0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "up",
        parents=[common],
        help="run a whole mesh: control plane, every Workload and its sidecar",
        description="Run the control plane and, for each Workload of MESH.yaml, its sidecar and its command.",
    )
    p.add_argument("-f", "--filename", required=True, type=Path, help="the mesh file (YAML)")
    p.add_argument(
        "--detach", "-d", action="store_true", help="run in the background; stop with `meshward down`"
    )
    p.add_argument(
        "--control-port",
        type=int,
        default=CONTROL_PORT,
        help="loopback port of the control plane (default: %(default)s, or a free one if taken; 0: a free one)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop the whole mesh when a workload fails to start (default: that workload fails alone)",
    )
    p.set_defaults(func=up)


def _refuse_if_running(state: MeshState) -> None:
    from meshward.control.client import pid_alive
    from meshward.mesh.records import read_run

    run = read_run(state.path)
    if run is not None and pid_alive(run.supervisor_pid):
        raise CliError(
            f"a mesh is already up in {state.path} (runner pid {run.supervisor_pid}); `meshward down` first"
        )


def up(args: argparse.Namespace) -> int:
    from meshward.identity.state import MeshState
    from meshward.resources.loader import LoadError, load_file

    state = MeshState(args.state)
    try:
        load_file(args.filename)  # refuse a broken file before anything starts
    except LoadError as exc:
        for problem in exc.problems[1:]:
            print(f"meshward: {problem}", file=sys.stderr)
        raise CliError(str(exc.problems[0])) from None
    _refuse_if_running(state)
    if args.detach:
        return _detach(args, state)
    return run_foreground(args.state, args.filename, args.control_port, strict=args.strict)


def run_foreground(
    state_dir: Path,
    mesh_file: Path,
    control_port: int = CONTROL_PORT,
    announce: bool = True,
    strict: bool = False,
) -> int:
    """Start the mesh, print its table, supervise it until SIGINT/SIGTERM, then stop it all."""
    from meshward.identity.state import MeshState
    from meshward.mesh.supervisor import MeshError, MeshSupervisor, format_table
    from meshward.resources.loader import LoadError

    state = MeshState(state_dir)
    supervisor = MeshSupervisor(state, mesh_file, control_port)
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
        raise CliError(str(exc)) from None
    print(format_table(supervisor.record, state.path), flush=True)
    failed = [w.ref for w in supervisor.record.workloads if w.state == "failed"]
    if failed:  # they failed alone (without --strict) and are retried with backoff
        print(
            f"meshward up: not started: {', '.join(failed)} (see `meshward status`)",
            file=sys.stderr,
            flush=True,
        )
    if announce:
        ready = "the other workloads are up" if failed else "all workloads ready"
        print(f"{ready}; Ctrl-C stops the mesh", file=sys.stderr, flush=True)
    try:
        supervisor.supervise()
    finally:
        supervisor.stop()
    print("meshward up: stopped", file=sys.stderr, flush=True)
    return 0


def _detach(args: argparse.Namespace, state: MeshState) -> int:
    """Fork the runner into its own session (no second interpreter start-up), wait until ready."""
    from meshward.mesh.records import mesh_dir, read_run
    from meshward.mesh.supervisor import format_table

    log = mesh_dir(state.path) / "up.log"
    if not state.path.exists():  # private from the start: `init` leaves an existing dir's mode alone
        state.path.mkdir(mode=0o700, parents=True)
        state.path.chmod(0o700)  # whatever the umask
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the runner: its own session, output to the log, never returns
        os._exit(_run_detached(state.path, args.filename, args.control_port, log, args.strict))
    deadline = time.monotonic() + DETACH_TIMEOUT
    while time.monotonic() < deadline:
        run = read_run(state.path)
        if run is not None and run.supervisor_pid == pid and run.state in ("running", "failed"):
            if run.state == "failed":
                _reap(pid, 30.0)
                raise CliError(f"the mesh did not start: {run.error} (log: {log})")
            print(format_table(run, state.path))
            failed = [w.ref for w in run.workloads if w.state == "failed"]
            if failed:
                print(
                    f"not started (retried with backoff): {', '.join(failed)}; see `meshward status`",
                    file=sys.stderr,
                )
            print(
                f"mesh up in the background (runner pid {pid}); stop it with `meshward down`", file=sys.stderr
            )
            return 0
        if _reap(pid, 0.0):
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            reason = tail[0].removeprefix("meshward up: ") if tail else "the runner exited"
            raise CliError(f"the mesh did not start: {reason} (log: {log})")
        time.sleep(0.02)
    os.kill(pid, signal.SIGTERM)
    raise CliError(f"the mesh was not ready within {DETACH_TIMEOUT:.0f}s; stopping it (log: {log})")


def _run_detached(
    state_dir: Path, mesh_file: Path, control_port: int, log: Path, strict: bool = False
) -> int:
    code = 1
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        code = run_foreground(state_dir, mesh_file, control_port, announce=False, strict=strict)
    except CliError as exc:
        print(f"meshward up: {exc}", file=sys.stderr)
    except Exception as exc:  # nothing may escape into the parent's code path
        from meshward.control.operations import ConfigError
        from meshward.mesh.workload import MeshError

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
