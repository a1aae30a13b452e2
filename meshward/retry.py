"""Exponential back-off: the one delay rule behind every retry loop in Meshward.

``backoff(attempt, base, cap, jitter)`` is pure (pass ``rand`` to make it deterministic) and
:class:`Backoff` is its stateful form for a loop (``next()`` after a failure, ``reset()`` after a
success). The delay before retry ``attempt`` (0 for the first retry) is ``min(cap, base * 2**attempt)``,
then jittered:

- ``"full"``: uniform in ``[0, delay)`` — AWS's "full jitter", for many clients retrying against
  one server (the sidecars' control-plane watch and joins);
- ``"spread"``: uniform in ``[delay/2, 3*delay/2)`` — keeps the expected delay (audit shipping and
  SIEM sinks);
- ``"none"``: exactly ``delay`` — process restarts, which an operator reads in a log.

A leaf module: it imports nothing from Meshward.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal

__all__ = ["Backoff", "Jitter", "backoff"]

Jitter = Literal["full", "spread", "none"]


def backoff(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: Jitter = "full",
    rand: Callable[[], float] = random.random,
) -> float:
    """The delay in seconds before retry number ``attempt`` (0-based); never above ``cap``
    (``"spread"``: never above ``1.5 * cap``), never negative."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    # 2**attempt grows without bound; past 64 doublings any base is over any sensible cap
    delay = cap if attempt > 64 else min(cap, base * 2.0**attempt)
    if jitter == "full":
        return delay * rand()
    if jitter == "spread":
        return delay * (0.5 + rand())
    return delay


class Backoff:
    """The running delay of one retry loop: ``next()`` per failure, ``reset()`` on success."""

    __slots__ = ("attempt", "base", "cap", "jitter", "rand")

    def __init__(
        self,
        base: float,
        cap: float,
        jitter: Jitter = "full",
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.base, self.cap, self.jitter, self.rand = base, cap, jitter, rand
        self.attempt = 0

    def peek(self) -> float:
        """The un-jittered delay ``next()`` would jitter (for a log line)."""
        return backoff(self.attempt, base=self.base, cap=self.cap, jitter="none")

    def next(self) -> float:
        delay = backoff(self.attempt, base=self.base, cap=self.cap, jitter=self.jitter, rand=self.rand)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
