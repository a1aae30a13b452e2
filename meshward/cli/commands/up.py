"""``meshward up -f MESH.yaml [--detach]``: run the control plane and every Workload with its sidecar.

In the foreground it prints the table of workloads once all are ready, then keeps them running
(restarting what exits) until Ctrl-C, which stops everything. ``--detach`` forks the same runner
into the background (its log in ``<state>/mesh/up.log``), returns once all are ready, and
``meshward down`` stops it. The running and the daemonizing are :mod:`meshward.mesh.daemon`;
this module parses the arguments and prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from meshward.cli.errors import CliError

if TYPE_CHECKING:
    from meshward.mesh.records import RunRecord

__all__ = ["CONTROL_PORT", "register"]

#: ``meshward.mesh.workload.CONTROL_PORT`` (a test keeps them equal): the parser is built without
#: importing the supervisor.
CONTROL_PORT = 15012


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


def up(args: argparse.Namespace) -> int:
    from meshward.mesh.daemon import detach, refuse_if_running, run_foreground
    from meshward.mesh.workload import MeshError
    from meshward.resources.loader import LoadError, load_file

    state_dir = Path(args.state)
    try:
        load_file(args.filename)  # refuse a broken file before anything starts
    except LoadError as exc:
        for problem in exc.problems[1:]:
            print(f"meshward: {problem}", file=sys.stderr)
        raise CliError(str(exc.problems[0])) from None
    try:
        refuse_if_running(state_dir)
        if args.detach:
            running = detach(
                state_dir, args.filename, args.control_port, args.strict, _announcer(state_dir, False)
            )
            _print_detached(running.pid, running.record, state_dir)
            return 0
        code = run_foreground(
            state_dir, args.filename, args.control_port, args.strict, _announcer(state_dir, True)
        )
    except MeshError as exc:
        raise CliError(str(exc)) from None
    if code == 0:
        print("meshward up: stopped", file=sys.stderr, flush=True)
    return code


def _announcer(state_dir: Path, foreground: bool) -> Callable[[RunRecord], None]:
    """What the runner prints once the mesh is up (in the background: into its log)."""

    def announce(record: RunRecord) -> None:
        from meshward.mesh.supervisor import format_table

        print(format_table(record, state_dir), flush=True)
        failed = [w.ref for w in record.workloads if w.state == "failed"]
        if failed:  # they failed alone (without --strict) and are retried with backoff
            print(
                f"meshward up: not started: {', '.join(failed)} (see `meshward status`)",
                file=sys.stderr,
                flush=True,
            )
        if foreground:
            ready = "the other workloads are up" if failed else "all workloads ready"
            print(f"{ready}; Ctrl-C stops the mesh", file=sys.stderr, flush=True)

    return announce


def _print_detached(pid: int, record: RunRecord, state_dir: Path) -> None:
    from meshward.mesh.supervisor import format_table

    print(format_table(record, state_dir))
    failed = [w.ref for w in record.workloads if w.state == "failed"]
    if failed:
        print(
            f"not started (retried with backoff): {', '.join(failed)}; see `meshward status`", file=sys.stderr
        )
    print(f"mesh up in the background (runner pid {pid}); stop it with `meshward down`", file=sys.stderr)
