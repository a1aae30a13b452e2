"""The Redis backend against a real redis-server: atomic scripts, shared budgets, outages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from meshward.ratelimit.backend import BackendUnavailable
from meshward.ratelimit.compile import CompiledLimit, RequestFacts, compile_policies
from meshward.ratelimit.limiter import RateLimiter
from meshward.ratelimit.redis_backend import RedisBackend
from tests.ratelimit.conftest import RedisServer
from tests.ratelimit.policies import policy
from tests.support.sidecar import make_snapshot

pytestmark = [pytest.mark.redis]
T = TypeVar("T")


def limits(url: str, *specs: dict[str, Any]) -> list[CompiledLimit]:
    snap = make_snapshot("llm/chat", policies=[policy(*specs, backend=url)])
    return [lim for p in compile_policies(snap) for lim in p.limits]


FACTS = RequestFacts("demo.local/ns/web/sa/webapp", "web", "POST", "/v1/chat/completions", {}, "m", "chat")


def run(make: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(make())


def test_bucket_take_refuses_over_burst(redis_url: str) -> None:
    (lim,) = limits(redis_url, {"name": "rps", "requests": {"limit": 1, "per": "minute", "burst": 3}})

    async def scenario() -> list[Any]:
        b = RedisBackend(redis_url)
        try:
            return [await b.take(lim, "k") for _ in range(4)]
        finally:
            await b.aclose()

    decisions = run(scenario)
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert 59 <= decisions[3].retry_after <= 60


def test_two_replicas_share_one_token_budget(redis_url: str) -> None:
    (lim,) = limits(redis_url, {"name": "t", "key": "source.principal", "tokens": {"limit": 100}})

    async def scenario() -> tuple[list[bool], int]:
        a, b = RedisBackend(redis_url), RedisBackend(redis_url)
        try:
            out = []
            for i in range(5):
                backend = (a, b)[i % 2]
                d = await backend.reserve(lim, "caller", 0)
                out.append(d.allowed)
                if d.allowed:
                    backend.reconcile(lim, "caller", d.window, 0, 25)
                    await backend.drain()
            last = await b.reserve(lim, "caller", 0)
            return out, last.remaining
        finally:
            await a.aclose()
            await b.aclose()

    allowed, remaining = run(scenario)
    assert allowed == [True, True, True, True, False] and remaining == 0


def test_reservation_that_cannot_fit_is_refused_and_refunds_never_go_negative(redis_url: str) -> None:
    (lim,) = limits(redis_url, {"name": "t", "tokens": {"limit": 100}})

    async def scenario() -> list[Any]:
        b = RedisBackend(redis_url)
        try:
            first = await b.reserve(lim, "", 80)
            too_big = await b.reserve(lim, "", 21)
            b.reconcile(lim, "", first.window, 80, 0)  # the call used nothing
            b.reconcile(lim, "", first.window, 80, 0)  # a duplicate refund must not go below zero
            await b.drain()
            after = await b.reserve(lim, "", 0)
            return [first, too_big, after]
        finally:
            await b.aclose()

    first, too_big, after = run(scenario)
    assert first.allowed and first.remaining == 20
    assert not too_big.allowed and too_big.remaining == 20
    assert after.allowed and after.remaining == 100


def test_concurrency_slots_are_released_and_crashed_leases_expire(redis_url: str) -> None:
    (lim,) = limits(redis_url, {"name": "c", "concurrency": 2})

    async def scenario() -> None:
        b = RedisBackend(redis_url)
        crashed = RedisBackend(redis_url, lease_seconds=0.3)
        try:
            d1, rel1 = await b.acquire(lim, "", "a")
            d2, _ = await crashed.acquire(lim, "", "b")  # never released: its sidecar "crashed"
            d3, rel3 = await b.acquire(lim, "", "c")
            assert (d1.allowed, d2.allowed, d3.allowed) == (True, True, False) and rel3 is None
            assert rel1 is not None
            rel1()
            rel1()
            await b.drain()
            d4, rel4 = await b.acquire(lim, "", "d")
            assert d4.allowed and rel4 is not None
            deadline = time.monotonic() + 10
            while True:  # the crashed lease expires by itself
                d5, _rel5 = await b.acquire(lim, "", "e")
                if d5.allowed:
                    break
                assert time.monotonic() < deadline, "lease never expired"
                await asyncio.sleep(0.05)
        finally:
            await b.aclose()
            await crashed.aclose()

    run(scenario)


def test_scripts_are_reloaded_after_script_flush(redis_url: str) -> None:
    (lim,) = limits(redis_url, {"name": "rps", "requests": {"limit": 10}})

    async def scenario() -> bool:
        b = RedisBackend(redis_url)
        try:
            await b.take(lim, "")
            await b.client.script_flush()
            return (await b.take(lim, "")).allowed  # EVALSHA misses, the script is loaded again
        finally:
            await b.aclose()

    assert run(scenario)


def test_outage_fails_open_or_closed_as_configured_and_fast(own_redis: RedisServer) -> None:
    url = own_redis.url
    lims = limits(
        url,
        {"name": "rate", "requests": {"limit": 100}},  # default: open
        {"name": "budget", "tokens": {"limit": 1000}},  # default: closed
    )

    async def scenario() -> None:
        backend = RedisBackend(url, timeout=0.2, down_seconds=30)
        limiter = RateLimiter(lims, {url: backend})
        try:
            ok = await limiter.admit(FACTS, "r1", 10)
            assert ok.refusal is None
            limiter.settle(ok, None)
            await backend.drain()
            own_redis.stop()
            adm = await limiter.admit(FACTS, "r2", 10)
            assert [lim.name for lim in adm.failed_open] == ["rate"]
            assert adm.refusal is not None and adm.refusal.unavailable and adm.refusal.limit.name == "budget"
            # While it is known to be down, checks fail at once without touching the network
            # (a network attempt would be counted as a failure).
            failures = backend.failures
            assert failures >= 1
            with pytest.raises(BackendUnavailable, match="down"):
                await backend.take(lims[0], "")
            assert backend.failures == failures
        finally:
            await backend.aclose()

    run(scenario)


def test_open_budget_and_closed_rate_when_overridden(own_redis: RedisServer) -> None:
    url = own_redis.url
    lims = limits(
        url,
        {"name": "rate", "requests": {"limit": 100}, "failureMode": "closed"},
        {"name": "budget", "tokens": {"limit": 1000}, "failureMode": "open"},
    )
    own_redis.stop()

    async def scenario() -> None:
        backend = RedisBackend(url, timeout=0.2)
        try:
            adm = await RateLimiter(lims, {url: backend}).admit(FACTS, "r", 1)
            assert adm.refusal is not None and adm.refusal.limit.name == "rate" and adm.refusal.unavailable
        finally:
            await backend.aclose()

    run(scenario)


def test_one_batch_per_request_and_a_refused_request_gives_back_what_it_got(redis_url: str) -> None:
    lims = limits(
        redis_url,
        {"name": "budget", "tokens": {"limit": 100}},
        {"name": "one", "concurrency": 1},
    )

    async def scenario() -> None:
        backend = RedisBackend(redis_url)
        limiter = RateLimiter(lims, {redis_url: backend})
        try:
            first = await limiter.admit(FACTS, "a", 30)
            assert first.refusal is None and len(first.holds) == 1 and len(first.releases) == 1
            second = await limiter.admit(FACTS, "b", 30)  # the slot is taken: refused
            assert second.refusal is not None and second.refusal.limit.name == "one"
            assert second.settled and not second.holds and not second.releases
            await backend.drain()
            budget = await backend.reserve(lims[0], "", 0)
            assert budget.remaining == 70  # only the first request's 30 are reserved
            limiter.settle(first, None)
            await backend.drain()
            assert (await limiter.admit(FACTS, "c", 30)).refusal is None
        finally:
            await backend.aclose()

    run(scenario)
