"""Virtualenvs of their own for tools a benchmark runs but the project does not depend on
(the LiteLLM proxy, py-spy): made once under ``.bench/`` (or ``$MESHWARD_BENCH_CACHE``) with a
pinned requirement, reused while it is there. No package index: :class:`Skip` with the reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["CACHE", "Skip", "ensure_venv"]

CACHE = Path(os.environ.get("MESHWARD_BENCH_CACHE") or Path(__file__).resolve().parents[1] / ".bench")


class Skip(Exception):
    """A benchmark (or a part of one) cannot run here; the message says why."""


def ensure_venv(venv: Path, requirement: str, command: str, timeout: float = 420) -> Path:
    """``venv/bin/<command>`` of a virtualenv with ``requirement`` (``name==version``) installed."""
    marker = venv / f".installed-{requirement.replace('/', '_')}"
    exe = venv / "bin" / command
    if marker.exists() and exe.exists():
        return exe
    try:
        if not (venv / "bin" / "python").exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120
            )
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", requirement],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise Skip(f"cannot make the virtualenv {venv}: {type(exc).__name__}: {exc}") from None
    if done.returncode != 0 or not exe.exists():
        errors = [ln for ln in done.stderr.splitlines() if ln.startswith("ERROR")] or done.stderr.splitlines()
        last = (errors or [f"exit {done.returncode}"])[-1][:200]
        raise Skip(f"pip install {requirement} failed (no package index?): {last}")
    marker.write_text(requirement + "\n")
    return exe
