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

__all__ = ["register"]

RUNNER_STOP_TIMEOUT = 20.0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "down",
        parents=[common],
        help="stop what `meshward up --detach` started",
        description="Stop the apps, sidecars and control plane that `meshward up --detach` started.",
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
    run_path(state.path).unlink(missing_ok=True)
    print(f"mesh in {state.path} stopped ({len(run.workloads)} workloads)", file=sys.stderr)
    return 0


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False
