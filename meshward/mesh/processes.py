"""Child processes of the local mesh: each in its own process group, stopped group and all.

Every process the runner starts (control plane, sidecars, apps) leads a new session, so that
stopping it also stops whatever it spawned (a shell, workers), and so that a Ctrl-C on the
terminal reaches only the runner, which then stops everything in order.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from meshward.retry import backoff

__all__ = [
    "MAX_RESTART_DELAY",
    "Child",
    "group_alive",
    "kill_group",
    "restart_delay",
    "start_child",
    "stop_groups",
]

MAX_RESTART_DELAY = 30.0


def restart_delay(failures: int) -> float:
    """Seconds before restarting a process that failed ``failures`` times in a row: 0.5 s,
    doubling, at most 30 s (no jitter: the log says when it comes back)."""
    return backoff(failures, base=0.5, cap=MAX_RESTART_DELAY, jitter="none")


class Child:
    """A started process (group leader) and its log file."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name, self.popen, self.log = name, popen, log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exit_code(self) -> int | None:
        """None while running; the exit code (negative: killed by that signal) once it ended."""
        return self.popen.poll()

    def stop(self, timeout: float = 5.0) -> None:
        stop_groups([self.pid], timeout, [self.popen])


def start_child(
    name: str,
    args: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Child:
    """Start ``args`` as the leader of a new session, stdout and stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    return Child(name, popen, log)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_groups(
    pgids: Sequence[int], timeout: float = 5.0, children: Sequence[subprocess.Popen[bytes]] = ()
) -> None:
    """SIGTERM every group, wait up to ``timeout`` for all to end, then SIGKILL what is left.

    ``children``: the group leaders that are this process's own children, reaped here (a zombie
    leader would otherwise keep its group "alive").
    """
    groups = [p for p in pgids if p > 0]
    for pgid in groups:
        kill_group(pgid, signal.SIGTERM)

    def any_alive() -> bool:
        for child in children:
            child.poll()
        return any(group_alive(p) for p in groups)

    deadline = time.monotonic() + timeout
    while any_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    for pgid in groups:
        kill_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while any_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
