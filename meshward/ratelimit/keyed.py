"""One state record per key value, with memory bounded under any number of callers.

A limit keyed by caller, model or header keeps one record per distinct value. Memory is
bounded two ways:

- *idle eviction*: records are kept in least-recently-used order; once the store holds more
  than a few hundred records, each insertion looks at a few of the oldest and drops those whose state is indistinguishable from a fresh one (a
  full bucket, a past window, no request in flight), so eviction never forgives usage;
- *a hard cap*: when ``max_keys`` records are held and none of the oldest is idle, a new key
  shares one *overflow* record instead of getting its own. Nobody's budget is reset to make
  room, and a flood of new keys throttles itself together rather than growing memory.

Key values are caller-controlled (headers), so long values are replaced by a digest.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["OVERFLOW_KEY", "KeyedStates", "bounded_key"]

S = TypeVar("S")

OVERFLOW_KEY = "\x00overflow"
_MAX_KEY_CHARS = 96


def bounded_key(value: str) -> str:
    """The value itself when short, else a digest of it (bounded memory, stable identity)."""
    if len(value) <= _MAX_KEY_CHARS:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


class KeyedStates(Generic[S]):
    """Records of type ``S`` by key; ``idle(state, now)`` says a record may be forgotten."""

    __slots__ = (
        "_factory",
        "_idle",
        "_overflow",
        "_states",
        "evicted",
        "max_keys",
        "overflowed",
        "sweep",
        "sweep_from",
    )

    def __init__(
        self,
        factory: Callable[[float], S],
        idle: Callable[[S, float], bool],
        max_keys: int = 10_000,
        sweep: int = 4,
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._factory = factory
        self._idle = idle
        self._states: OrderedDict[str, S] = OrderedDict()
        self._overflow: S | None = None
        self.max_keys = max_keys
        self.sweep = sweep
        # Below this size idle records are kept: evicting a caller's bucket the moment it is
        # full would only make it be re-created on its next request (churn, no memory gain).
        self.sweep_from = min(1024, max(1, max_keys // 2))
        self.evicted = 0
        self.overflowed = 0

    def configure(self, factory: Callable[[float], S], idle: Callable[[S, float], bool]) -> None:
        """New parameters (a new config generation); the records themselves are kept."""
        self._factory = factory
        self._idle = idle

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, key: str) -> bool:
        return key in self._states

    def get(self, key: str, now: float) -> S:
        states = self._states
        state = states.get(key)
        if state is not None:
            states.move_to_end(key)
            return state
        if len(states) >= self.sweep_from:
            self._evict_idle(now, self.sweep)
        if len(states) >= self.max_keys:
            self._evict_idle(now, min(len(states), 64))
            if len(states) >= self.max_keys:
                self.overflowed += 1
                if self._overflow is None:
                    self._overflow = self._factory(now)
                return self._overflow
        state = self._factory(now)
        states[key] = state
        return state

    def _evict_idle(self, now: float, budget: int) -> None:
        """Look at up to ``budget`` of the oldest records: drop idle ones, rotate the others."""
        states = self._states
        idle = self._idle
        for _ in range(min(budget, len(states))):
            key, state = next(iter(states.items()))
            if idle(state, now):
                del states[key]
                self.evicted += 1
            else:
                states.move_to_end(key)

    def sweep_all(self, now: float) -> int:
        """Drop every idle record (periodic housekeeping); returns how many were dropped."""
        dead = [k for k, s in self._states.items() if self._idle(s, now)]
        for k in dead:
            del self._states[k]
        self.evicted += len(dead)
        if self._overflow is not None and self._idle(self._overflow, now):
            self._overflow = None
        return len(dead)
