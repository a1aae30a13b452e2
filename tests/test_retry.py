"""``meshward.retry``: the one back-off rule (tables for the shape, hypothesis for the bounds)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshward.retry import Backoff, Jitter, backoff


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "jitter", "rand", "expected"),
    [
        (0, 0.5, 30.0, "none", 0.3, 0.5),
        (1, 0.5, 30.0, "none", 0.3, 1.0),
        (5, 0.5, 30.0, "none", 0.3, 16.0),
        (6, 0.5, 30.0, "none", 0.3, 30.0),  # capped
        (1000, 0.5, 30.0, "none", 0.3, 30.0),  # no overflow however many failures
        (0, 0.1, 5.0, "full", 0.5, 0.05),
        (3, 0.1, 5.0, "full", 0.0, 0.0),
        (10, 0.1, 5.0, "full", 0.5, 2.5),
        (0, 0.2, 30.0, "spread", 0.0, 0.1),
        (0, 0.2, 30.0, "spread", 0.5, 0.2),
        (2, 0.2, 30.0, "spread", 0.5, 0.8),
    ],
)
def test_backoff_table(
    attempt: int, base: float, cap: float, jitter: Jitter, rand: float, expected: float
) -> None:
    assert backoff(attempt, base=base, cap=cap, jitter=jitter, rand=lambda: rand) == pytest.approx(expected)


def test_negative_attempt_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="attempt"):
        backoff(-1, base=1.0, cap=2.0)


@given(
    attempt=st.integers(0, 10_000),
    base=st.floats(0.001, 10.0),
    cap=st.floats(0.001, 100.0),
    jitter=st.sampled_from(["full", "spread", "none"]),
    rand=st.floats(0.0, 1.0, exclude_max=True),
)
def test_backoff_bounds(attempt: int, base: float, cap: float, jitter: Jitter, rand: float) -> None:
    delay = backoff(attempt, base=base, cap=cap, jitter=jitter, rand=lambda: rand)
    plain = min(cap, base * 2.0**attempt) if attempt <= 64 else cap
    assert delay >= 0
    if jitter == "none":
        assert delay == plain
    elif jitter == "full":
        assert delay <= plain
    else:
        assert plain / 2 <= delay <= plain * 1.5


@given(base=st.floats(0.001, 10.0), cap=st.floats(0.001, 100.0), n=st.integers(1, 80))
def test_backoff_never_shrinks_until_reset(base: float, cap: float, n: int) -> None:
    loop = Backoff(base, cap, "none")
    delays = [loop.next() for _ in range(n)]
    assert delays == sorted(delays) and delays[-1] <= cap
    assert loop.peek() == (min(cap, base * 2.0**n) if n <= 64 else cap)
    loop.reset()
    assert loop.next() == min(cap, base)
