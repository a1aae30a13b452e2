"""start_eagerly: no Task when the coroutine never waits; the same coroutine continues when it does."""

from __future__ import annotations

import asyncio

import uvloop

from meshward.proxy.eager import start_eagerly


def test_completes_synchronously_without_a_task() -> None:
    seen: list[str] = []

    async def quick() -> None:
        seen.append("ran")

    async def main() -> None:
        assert start_eagerly(quick()) is None
        assert seen == ["ran"]  # already ran, before any loop iteration

    uvloop.run(main())


def test_suspends_then_continues_with_values_errors_and_cancellation() -> None:
    seen: list[object] = []

    async def waits(fut: asyncio.Future[int], fails: asyncio.Future[int]) -> None:
        seen.append("start")
        seen.append(await fut)
        await asyncio.sleep(0)
        try:
            await fails
        except ValueError as exc:
            seen.append(str(exc))
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        fails: asyncio.Future[int] = loop.create_future()
        task = start_eagerly(waits(fut, fails))
        assert task is not None and seen == ["start"]
        fut.set_result(42)
        await asyncio.sleep(0.01)
        fails.set_exception(ValueError("boom"))
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.sleep(0.01)
        assert task.done()
        assert seen == ["start", 42, "boom", "cancelled"]

    uvloop.run(main())
