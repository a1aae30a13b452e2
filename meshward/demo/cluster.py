"""The demo's hands: the ``meshward`` CLI as a user types it, and the example processes.

:class:`MeshCli` runs ``meshward <command> --state DIR ...`` in a child process (so the demo sees
exactly what a user would, exit codes and all) with a bounded time. :func:`client_json` reads
the one JSON object an example client prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["NOT_YET", "REPO", "MeshCli", "client_json"]

REPO = Path(__file__).resolve().parents[2]  # examples/ lives beside the meshward package
#: What the demo's waits (:func:`meshward.mesh.polling.wait_until`) read as "not up yet": a
#: command that timed out, a file half written, a JSON document not there yet.
NOT_YET: tuple[type[Exception], ...] = (Exception,)


def child_env() -> dict[str, str]:
    """The environment for children: this Python first on PATH, the repository importable."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(name, None)  # the demo's callers get their proxy from their sidecar, not from us
    return env


def client_json(stdout: str) -> dict[str, Any]:
    """The last JSON object an example client printed ({} if none)."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return {}


@dataclass
class MeshCli:
    """``meshward`` commands against one state directory."""

    state: Path
    env: dict[str, str] = field(default_factory=child_env)

    def run(
        self, command: str, *args: str, timeout: float = 60.0, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "meshward", command, "--state", str(self.state), *args]
        try:
            done = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=timeout, env=self.env, cwd=REPO
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            done = subprocess.CompletedProcess(argv, 124, out, f"timed out after {timeout:.0f} s")
        self._log(done)
        return done

    def _log(self, done: subprocess.CompletedProcess[str]) -> None:
        """Every command, its exit code and output, in ``<state>/demo/commands.log``."""
        log = self.state / "demo" / "commands.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        shown = " ".join(str(a) for a in done.args[2:])  # from "meshward" on
        with open(log, "a") as f:
            f.write(f"$ {shown}\n[exit {done.returncode}]\n{done.stdout}{done.stderr}\n")

    def run_as(
        self, identity: str, module: str, *args: str, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """``meshward run --as IDENTITY -- python -m MODULE ARGS``: a caller with its own sidecar."""
        return self.run("run", "--as", identity, "--", sys.executable, "-m", module, *args, timeout=timeout)

    def status(self) -> dict[str, Any]:
        done = self.run("status", "--json", timeout=20)
        if done.returncode != 0:
            return {}
        try:
            value = json.loads(done.stdout)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}
