"""Bounded waits: poll a condition until it holds, a deadline passes or a stop is asked for.

The one wait loop of the mesh runner (a control plane or a sidecar to come up) and of the demo
(an audit record, an alert, a generation to be acknowledged).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from meshward.mesh.errors import MeshError

__all__ = ["wait_until"]

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str,
    stop: threading.Event | None = None,
    *,
    interval: float = 0.02,
    tolerate: tuple[type[Exception], ...] = (),
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy (returned).

    Raises :class:`MeshError` when ``timeout`` passes ("timed out after Ns waiting for WHAT") or
    ``stop`` is set ("stopped"). An exception of a ``tolerate`` type counts as "not yet"; any
    other one propagates (a child that exited is an answer, not a reason to wait on).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
        try:
            value = predicate()
        except tolerate:
            value = None
        if value:
            return value
        time.sleep(interval)
    if stop is not None and stop.is_set():
        raise MeshError("stopped")
    raise MeshError(f"timed out after {timeout:.0f}s waiting for {what}")
