"""Real processes for end-to-end tests: free ports, bounded polling, whole-group teardown."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

__all__ = ["PYTHON", "ROOT", "Proc", "free_port", "spawn", "wait_for", "wait_port"]

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], T], timeout: float = 15.0, interval: float = 0.02, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the thing polled is not up yet
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate!r}: {last_exc!r}")


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    def ok() -> bool:
        with socket.create_connection((host, port), timeout=0.5):
            return True

    wait_for(ok, timeout, what=f"{host}:{port} to listen")


class Proc:
    """A child in its own process group; ``stop`` kills the whole group."""

    def __init__(self, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 5.0) -> None:
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)


def spawn(args: Sequence[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
    """Start ``args`` in a new session (its own process group), output to ``log``."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "wb")  # noqa: SIM115 - owned by the child
    popen = subprocess.Popen(
        list(args),
        stdout=out,
        stderr=subprocess.STDOUT,
        env=full_env,
        cwd=cwd or ROOT,
        start_new_session=True,
    )
    out.close()
    return Proc(popen, log)
