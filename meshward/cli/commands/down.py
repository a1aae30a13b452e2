"""``meshward down``: stop the mesh that ``meshward up --detach`` started, group by group.

The runner is asked to stop (SIGTERM: apps, then sidecars, then the control plane). If it is
gone or does not finish in time, every process group it recorded is stopped directly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

__all__ = ["register"]

RUNNER_STOP_TIMEOUT = 20.0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "down",
        parents=[common],
        help="stop what `meshward up --detach` started",
        description="Stop the mesh of --state: apps, gateways, sidecars, control plane, then its "
        "network namespaces (isolation: netns).",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="also remove the network namespaces, bridge and hosts files of this state directory "
        "when no runner record is left (after a kill -9 of `up`)",
    )
    p.set_defaults(func=down)


def down(args: argparse.Namespace) -> int:
    from meshward.control.client import pid_alive
    from meshward.identity.state import MeshState
    from meshward.mesh.processes import stop_groups
    from meshward.mesh.records import read_run, run_path

    state = MeshState(args.state)
    run = read_run(state.path)
    if run is None:
        if args.force:  # a runner killed -9 whose record is gone: its control plane may live on
            from meshward.control.client import read_control_info

            control = read_control_info(state.path)
            if control is not None and pid_alive(control.pid):
                stop_groups([control.pid], 5.0)
                print(f"stopped the control plane (pid {control.pid})", file=sys.stderr)
            _teardown_isolation(_tag_of(state.path))
        print(f"no mesh is up in {state.path}", file=sys.stderr)
        return 0
    if pid_alive(run.supervisor_pid):
        os.kill(run.supervisor_pid, signal.SIGTERM)
        deadline = time.monotonic() + RUNNER_STOP_TIMEOUT
        while pid_alive(run.supervisor_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(run.supervisor_pid) and _leads_group(run.supervisor_pid):
            os.killpg(run.supervisor_pid, signal.SIGKILL)
    stop_groups(run.pgids(), 5.0)  # whatever the runner could not stop (or it was killed)
    if run.isolation_tag or args.force:
        _teardown_isolation(run.isolation_tag or _tag_of(state.path))
    run_path(state.path).unlink(missing_ok=True)
    print(f"mesh in {state.path} stopped ({len(run.workloads)} workloads)", file=sys.stderr)
    return 0


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def _tag_of(state: Path) -> str:
    from meshward.isolation.plan import make_plan

    return make_plan(str(state), []).tag


def _teardown_isolation(tag: str) -> None:
    """Namespaces, bridge and hosts files of isolation mode (nothing to do without root or them)."""
    from meshward.cli.errors import CliError
    from meshward.isolation.network import IsolationError, leftovers, teardown

    if os.geteuid() != 0:
        return
    try:
        if any(leftovers(tag).values()):
            teardown(tag)
            print(f"removed the network namespaces of mesh {tag}", file=sys.stderr)
    except IsolationError as exc:
        raise CliError(str(exc)) from None
