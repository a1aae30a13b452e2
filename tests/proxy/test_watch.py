"""``Watch[T]``: the current value, its version, and an awaitable change (pure asyncio)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshward.proxy.watch import Watch


def test_empty_watch_has_no_value() -> None:
    watch: Watch[int] = Watch()
    assert watch.current is None and watch.version == 0
    with pytest.raises(LookupError):
        watch.get()


@given(st.lists(st.integers(), min_size=1, max_size=20))
def test_set_swaps_and_counts(values: list[int]) -> None:
    watch: Watch[int] = Watch()
    for n, value in enumerate(values, 1):
        watch.set(value)
        assert watch.get() == value and watch.version == n


def test_changed_wakes_every_waiter_with_the_new_value() -> None:
    async def scenario() -> None:
        watch: Watch[str] = Watch()
        watch.set("gen-1")
        waiters = [asyncio.create_task(watch.changed(watch.version)) for _ in range(3)]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiters)  # nothing new yet
        watch.set("gen-2")
        assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == ["gen-2"] * 3
        assert await asyncio.wait_for(watch.changed(0), 1) == "gen-2"  # already past: at once
        assert watch._waiters == []

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    async def scenario() -> None:
        watch: Watch[int] = Watch()
        waiter = asyncio.create_task(watch.changed(0))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert watch._waiters == []
        watch.set(1)  # no error for a waiter that went away

    asyncio.run(scenario())
