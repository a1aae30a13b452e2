"""Keyed state: idle eviction never forgives usage; the key cap bounds memory."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.ratelimit.keyed import KeyedStates, bounded_key
from meshward.ratelimit.state import TokenBucket, TokenWindow


def buckets(max_keys: int) -> KeyedStates[TokenBucket]:
    return KeyedStates(lambda now: TokenBucket(2, now), lambda b, now: b.idle(now, 1.0, 2), max_keys)


def test_same_key_same_record() -> None:
    store = buckets(10)
    assert store.get("a", 0.0) is store.get("a", 5.0)
    assert store.get("a", 0.0) is not store.get("b", 0.0)


def test_refilled_buckets_are_evicted_when_new_keys_arrive() -> None:
    store = buckets(1000)
    for i in range(100):
        store.get(f"k{i}", 0.0).take(0.0, 1.0, 2)
    for i in range(1000):  # much later: every old bucket is full again
        store.get(f"new{i}", 100.0)
    assert all(f"k{i}" not in store for i in range(100))
    assert store.evicted >= 100


def test_cap_holds_and_busy_keys_keep_their_usage() -> None:
    store = buckets(5)
    for i in range(5):
        b = store.get(f"busy{i}", 0.0)
        b.take(0.0, 1.0, 2, 2)  # empty: not idle
    overflow = store.get("intruder-1", 0.0)
    assert len(store) == 5 and store.overflowed == 1
    assert store.get("intruder-2", 0.0) is overflow  # newcomers share one record
    assert all(f"busy{i}" in store for i in range(5))
    assert not store.get("busy0", 0.0).take(0.0, 1.0, 2).allowed  # nobody's budget was reset


def test_window_records_survive_until_their_window_is_over() -> None:
    store: KeyedStates[TokenWindow] = KeyedStates(lambda _n: TokenWindow(), lambda w, now: w.idle(now, 60), 3)
    store.get("a", 10.0).reserve(10.0, 100, 60, 100)
    for i in range(10):
        store.get(f"x{i}", 30.0)
    assert "a" in store  # still inside its minute: spent budget kept
    assert store.sweep_all(61.0) >= 1
    assert "a" not in store


def test_long_keys_are_digested() -> None:
    assert bounded_key("short") == "short"
    long = "x" * 5000
    assert bounded_key(long).startswith("sha256:") and len(bounded_key(long)) < 80
    assert bounded_key(long) == bounded_key("x" * 5000) != bounded_key("x" * 4999)


@settings(max_examples=100, deadline=None)
@given(
    cap=st.integers(min_value=1, max_value=20),
    ops=st.lists(st.tuples(st.integers(min_value=0, max_value=200), st.floats(0, 5)), max_size=300),
)
def test_memory_bounded_under_many_callers(cap: int, ops: list[tuple[int, float]]) -> None:
    store = buckets(cap)
    now = 0.0
    for key, dt in ops:
        now += dt
        store.get(str(key), now).take(now, 1.0, 2)
        assert len(store) <= cap
