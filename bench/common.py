"""Helpers the benchmark modules share: reading processes' CPU time from Linux ``/proc``, and
recording a sidecar-pair run as a ratio row, and ``QUICK`` (``MESHWARD_BENCH_QUICK=1``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["QUICK", "add_pair_row", "cpu_seconds", "cpu_split", "total_cpu_seconds", "workdir"]

QUICK = os.environ.get("MESHWARD_BENCH_QUICK") == "1"  # the runner's --quick: a shorter run


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_split(pids: Iterable[int]) -> tuple[float, float]:
    """User and system CPU seconds of all of ``pids`` (an exited process counts nothing)."""
    user = system = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            user += int(fields[11]) / tick
            system += int(fields[12]) / tick
    return user, system


def total_cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of all of ``pids``; a process that has exited counts nothing."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def add_pair_row(
    results: dict[str, Any],
    rows: list[dict[str, Any]],
    name: str,
    target: str,
    measure: Callable[[], dict[str, Any]],
) -> None:
    """Run a sidecar-pair benchmark; keep it as ``results["pair"]`` plus a ratio row in ``rows``,
    or say in ``results["pair_skipped"]`` why it could not run."""
    try:
        pair = measure()
    except Exception as exc:  # the sidecar may not be runnable in this checkout
        results["pair_skipped"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        return
    results["pair"] = pair
    rows.append({"name": name, "value": pair["ratio"], "unit": "ratio", "target": target, "met": pair["met"]})


@contextlib.contextmanager
def workdir(area: str) -> Iterator[Path]:
    """A scratch directory for one benchmark run, removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix=f"bench-{area}-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
