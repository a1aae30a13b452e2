"""Run a request's coroutine eagerly: most requests never wait, so they need no Task.

``start_eagerly(coro)`` runs the coroutine right away, inside the protocol callback that parsed
the request. If it finishes without suspending (a pooled upstream was ready, no filter waited)
no Task is created and no loop iteration is spent; if it suspends, the rest runs in a Task
that keeps driving the same coroutine (what ``asyncio.eager_task_factory`` does in 3.12).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["start_eagerly"]


class _Yielded:
    """Awaitable that re-yields what the inner coroutine yielded to the event loop."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield self.value)


async def _drive(coro: Coroutine[Any, Any, None], yielded: Any) -> None:
    while True:
        try:
            sent = await _Yielded(yielded)
        except BaseException as exc:  # cancellation and errors go to the inner coroutine
            try:
                yielded = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration:
                return


def start_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coro`` until it first suspends; return the Task that finishes it, or None."""
    try:
        yielded = coro.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_drive(coro, yielded))
