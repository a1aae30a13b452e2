"""``meshward.identity.renewal``: every certificate is renewed at half-life."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshward.identity.renewal import renew_at, renewal_due

T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)


@pytest.mark.parametrize(
    ("lifetime", "elapsed", "due"),
    [
        (H, dt.timedelta(0), False),
        (H, dt.timedelta(minutes=29, seconds=59), False),
        (H, dt.timedelta(minutes=30), True),  # exactly half-life
        (H, dt.timedelta(minutes=59), True),
        (H, dt.timedelta(hours=2), True),  # expired: certainly due
        (24 * H, 11 * H, False),
        (24 * H, 12 * H, True),
        (dt.timedelta(seconds=30), dt.timedelta(seconds=14), False),
    ],
)
def test_renewal_due_table(lifetime: dt.timedelta, elapsed: dt.timedelta, due: bool) -> None:
    assert renewal_due(T0, T0 + lifetime, T0 + elapsed) is due


def test_renewal_due_defaults_to_now() -> None:
    now = dt.datetime.now(dt.UTC)
    assert renewal_due(now - 2 * H, now + H)
    assert not renewal_due(now - H, now + 2 * H)


@given(
    lifetime=st.integers(1, 10**8),
    offset=st.integers(-(10**8), 10**8),
)
def test_renew_at_is_the_midpoint(lifetime: int, offset: int) -> None:
    start = T0 + dt.timedelta(seconds=offset)
    end = start + dt.timedelta(seconds=lifetime)
    half = renew_at(start, end)
    assert start < half <= end and abs((half - start) - (end - half)) <= dt.timedelta(microseconds=1)
    assert renewal_due(start, end, half) and not renewal_due(start, end, half - dt.timedelta(microseconds=1))
