"""``meshward up -f MESH.yaml [--detach]``: run the control plane and every Workload with its sidecar.

In the foreground it prints the table of workloads once all are ready, then keeps them running
(restarting what exits) until Ctrl-C, which stops everything. ``--detach`` runs the same runner
in the background (its log in ``<state>/mesh/up.log``), returns once all are ready, and
``meshward down`` stops it.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from meshward.cli.errors import CliError
from meshward.control.client import pid_alive
from meshward.identity.state import MeshState
from meshward.mesh.records import mesh_dir, read_run
from meshward.mesh.supervisor import MeshError, MeshSupervisor, format_table
from meshward.resources.loader import LoadError, load_file

__all__ = ["register", "run_foreground"]

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
    p.set_defaults(func=up)


def _refuse_if_running(state: MeshState) -> None:
    run = read_run(state.path)
    if run is not None and pid_alive(run.supervisor_pid):
        raise CliError(
            f"a mesh is already up in {state.path} (runner pid {run.supervisor_pid}); `meshward down` first"
        )


def up(args: argparse.Namespace) -> int:
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
    return run_foreground(args.state, args.filename)


def run_foreground(state_dir: Path, mesh_file: Path, announce: bool = True) -> int:
    """Start the mesh, print its table, supervise it until SIGINT/SIGTERM, then stop it all."""
    state = MeshState(state_dir)
    supervisor = MeshSupervisor(state, mesh_file)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        supervisor.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        supervisor.prepare()
        supervisor.start()
    except (MeshError, LoadError) as exc:
        if supervisor.stopping.is_set():
            return 130
        raise CliError(str(exc)) from None
    print(format_table(supervisor.record, state.path), flush=True)
    if announce:
        print("all workloads ready; Ctrl-C stops the mesh", file=sys.stderr, flush=True)
    try:
        supervisor.supervise()
    finally:
        supervisor.stop()
    print("meshward up: stopped", file=sys.stderr, flush=True)
    return 0


def _detach(args: argparse.Namespace, state: MeshState) -> int:
    log = mesh_dir(state.path) / "up.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "meshward.mesh", "-f", str(args.filename.resolve())]
    command += ["--state", str(state.path.resolve())]
    with open(log, "ab") as out:
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + DETACH_TIMEOUT
    while time.monotonic() < deadline:
        run = read_run(state.path)
        if run is not None and run.supervisor_pid == child.pid and run.state in ("running", "failed"):
            if run.state == "failed":
                child.wait(30)
                raise CliError(f"the mesh did not start: {run.error} (log: {log})")
            print(format_table(run, state.path))
            print(
                f"mesh up in the background (runner pid {child.pid}); stop it with `meshward down`",
                file=sys.stderr,
            )
            return 0
        if child.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise CliError(
                f"the mesh did not start: {tail[0] if tail else f'exit {child.returncode}'} (log: {log})"
            )
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    raise CliError(f"the mesh was not ready within {DETACH_TIMEOUT:.0f}s; stopping it (log: {log})")
