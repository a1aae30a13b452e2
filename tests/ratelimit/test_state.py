"""Token bucket, token window and concurrency gate: tables for behaviour, hypothesis for invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.ratelimit.state import ConcurrencyGate, TokenBucket, TokenWindow, ceil_seconds


def test_bucket_starts_full_allows_burst_then_refuses_with_retry_after() -> None:
    b = TokenBucket(burst=3, now=100.0)
    assert [b.take(100.0, rate=1.0, burst=3).allowed for _ in range(4)] == [True, True, True, False]
    refused = b.take(100.0, 1.0, 3)
    assert refused.retry_after == pytest.approx(1.0)
    assert refused.remaining == 0


@pytest.mark.parametrize(
    ("elapsed", "rate", "allowed"),
    [(0.0, 2.0, False), (0.4, 2.0, False), (0.5, 2.0, True), (10.0, 2.0, True)],
)
def test_bucket_refills_on_time(elapsed: float, rate: float, allowed: bool) -> None:
    b = TokenBucket(burst=1, now=0.0)
    assert b.take(0.0, rate, 1).allowed
    assert b.take(elapsed, rate, 1).allowed is allowed


def test_bucket_clock_stepping_back_counts_as_no_time() -> None:
    b = TokenBucket(burst=1, now=50.0)
    assert b.take(50.0, 1.0, 1).allowed
    assert not b.take(10.0, 1.0, 1).allowed  # wall clock stepped back 40 s
    assert b.take(51.0, 1.0, 1).allowed


def test_bucket_idle_only_when_refilled() -> None:
    b = TokenBucket(burst=2, now=0.0)
    b.take(0.0, 1.0, 2, 2)
    assert not b.idle(1.0, 1.0, 2)
    assert b.idle(2.0, 1.0, 2)


def test_window_refuses_exactly_at_limit_and_resets_at_window_end() -> None:
    w = TokenWindow()
    assert w.reserve(60.0, limit=100, period=60, amount=0).allowed
    w.reconcile(61.0, 60, 1, 0, 100)  # the call used 100 tokens
    refused = w.reserve(70.0, 100, 60, 0)
    assert not refused.allowed and refused.remaining == 0
    assert refused.retry_after == pytest.approx(50.0) and refused.reset == pytest.approx(50.0)
    assert w.reserve(120.0, 100, 60, 0).allowed  # next minute


@pytest.mark.parametrize(
    ("used", "amount", "allowed"),
    [(0, 100, True), (0, 101, False), (60, 40, True), (60, 41, False), (99, 0, True), (100, 0, False)],
)
def test_window_estimate_must_fit(used: int, amount: int, allowed: bool) -> None:
    w = TokenWindow()
    w.reserve(0.0, 100, 60, used)
    assert w.reserve(1.0, 100, 60, amount).allowed is allowed


def test_window_reconcile_refunds_within_window_and_charges_overrun_after_roll() -> None:
    w = TokenWindow()
    d = w.reserve(10.0, 1000, 60, 500)
    w.reconcile(20.0, 60, d.window, 500, 120)
    assert w.used == 120
    d = w.reserve(59.0, 1000, 60, 100)
    w.reconcile(65.0, 60, d.window, 100, 0)  # refund for a past window: dropped
    assert w.used == 0
    d = w.reserve(70.0, 1000, 60, 10)
    w.reconcile(130.0, 60, d.window, 10, 50)  # overrun reported after the window rolled
    assert w.used == 40


def test_gate_slots_release_once() -> None:
    g = ConcurrencyGate()
    d1, s1 = g.acquire(2)
    d2, s2 = g.acquire(2)
    d3, s3 = g.acquire(2)
    assert (d1.allowed, d2.allowed, d3.allowed) == (True, True, False) and s3 is None
    assert s1 is not None and s2 is not None
    s1.release()
    s1.release()  # idempotent: must not free s2's place
    assert g.in_flight == 1
    assert g.acquire(2)[0].allowed


@pytest.mark.parametrize(("seconds", "whole"), [(0.0, 0), (0.2, 1), (1.0, 1), (1.0000001, 2), (-3.0, 0)])
def test_ceil_seconds(seconds: float, whole: int) -> None:
    assert ceil_seconds(seconds) == whole


times = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(
    rate=st.floats(min_value=0.01, max_value=1000),
    burst=st.integers(min_value=1, max_value=1000),
    steps=st.lists(st.tuples(times, st.integers(min_value=1, max_value=50)), max_size=60),
)
def test_bucket_never_negative_never_above_burst(
    rate: float, burst: int, steps: list[tuple[float, int]]
) -> None:
    b = TokenBucket(burst, 0.0)
    for now, n in steps:
        d = b.take(now, rate, burst, n)
        assert 0 <= b.tokens <= burst
        assert d.remaining >= 0 and d.reset >= 0 and d.retry_after >= 0
        assert d.allowed or d.retry_after > 0


@settings(max_examples=100, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=10_000),
    ops=st.lists(
        st.tuples(
            times, st.integers(min_value=0, max_value=20_000), st.integers(min_value=0, max_value=20_000)
        ),
        max_size=60,
    ),
)
def test_window_never_negative(limit: int, ops: list[tuple[float, int, int]]) -> None:
    w = TokenWindow()
    clock = 0.0
    for dt, amount, actual in ops:
        clock += dt / 1000
        d = w.reserve(clock, limit, 60, amount)
        assert d.remaining >= 0 and w.used >= 0
        if d.allowed:
            assert w.used <= limit or amount == 0
            w.reconcile(clock + dt / 2000, 60, d.window, amount, actual)
        assert w.used >= 0


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(st.sampled_from(["acquire", "release", "release_twice"]), max_size=100))
def test_gate_never_negative_and_balances(ops: list[str]) -> None:
    g = ConcurrencyGate()
    held = []
    for op in ops:
        if op == "acquire":
            _d, slot = g.acquire(5)
            if slot is not None:
                held.append(slot)
        elif held:
            slot = held.pop(0)
            slot.release()
            if op == "release_twice":
                slot.release()
        assert g.in_flight == len(held) and 0 <= g.in_flight <= 5
    for slot in held:
        slot.release()
    assert g.in_flight == 0
