"""``Watch[T]``: a value that changes over time — the current one, and an awaitable change.

The sidecar's config reaches the data plane this way: the control agent compiles a generation
off the loop, then :meth:`Watch.set` swaps the compiled object in *on the loop* (one attribute
store: a request sees the old generation or the new one, never a mix) and wakes whoever awaits
:meth:`Watch.changed`. Readers on the hot path read :attr:`Watch.current`.

Not thread-safe by design: ``set`` belongs to the loop that readers await on (before a loop runs,
``set`` with nobody waiting is fine — a process sets its first value before it serves).
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

__all__ = ["Watch"]

T = TypeVar("T")


class Watch(Generic[T]):
    """The current value (``None`` until the first :meth:`set`) and its version (0, then 1, 2, …)."""

    __slots__ = ("_waiters", "current", "version")

    def __init__(self) -> None:
        self.current: T | None = None
        self.version = 0
        self._waiters: list[asyncio.Future[None]] = []

    def get(self) -> T:
        """The current value; ``LookupError`` before the first :meth:`set`."""
        value = self.current
        if value is None:
            raise LookupError("no value yet")
        return value

    def set(self, value: T) -> None:
        """Swap ``value`` in and wake every waiter."""
        self.current = value
        self.version += 1
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def changed(self, since: int) -> T:
        """The value once :attr:`version` is past ``since`` (at once if it already is)."""
        while self.version <= since or self.current is None:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return self.current
