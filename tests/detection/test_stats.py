"""The detectors' statistics: Shapiro–Wilk W (against SciPy), the robust baseline, the PSI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.detection.stats import RobustBaseline, psi, shapiro_wilk_w

samples = st.lists(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False), min_size=3, max_size=400
)


@settings(max_examples=80, deadline=None)
@given(samples)
def test_shapiro_wilk_w_matches_scipy(values: list[float]) -> None:
    arr = np.array(values)
    if np.ptp(arr) <= 1e-6 * max(1.0, float(np.max(np.abs(arr)))):
        assert shapiro_wilk_w(values) == pytest.approx(1.0, abs=1e-6) or shapiro_wilk_w(values) <= 1.0
        return
    ours = shapiro_wilk_w(values)
    theirs = float(scipy.stats.shapiro(arr).statistic)
    assert 0.0 < ours <= 1.0
    assert ours == pytest.approx(theirs, abs=1e-4)


@pytest.mark.parametrize(
    ("n", "dist", "low", "high"), [(200, "normal", 0.97, 1.0), (200, "exponential", 0.0, 0.9)]
)
def test_shapiro_wilk_tells_normal_from_skewed(n: int, dist: str, low: float, high: float) -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=n) if dist == "normal" else rng.exponential(size=n)
    assert low <= shapiro_wilk_w(list(values)) <= high


def test_shapiro_wilk_needs_three_values() -> None:
    with pytest.raises(ValueError):
        shapiro_wilk_w([1.0, 2.0])


@pytest.mark.parametrize(
    ("expected", "actual", "low", "high"),
    [
        ({"0": 50, "1": 50}, {"0": 50, "1": 50}, 0.0, 1e-9),
        ({"0": 50, "1": 50}, {"0": 55, "1": 45}, 0.0, 0.1),
        ({"0": 90, "1": 10}, {"0": 10, "1": 90}, 1.0, 10.0),
        ({"0": 100}, {"1": 100}, 5.0, 100.0),
        ({}, {"0": 1}, 0.0, 0.0),
    ],
)
def test_psi_table(expected: dict[str, float], actual: dict[str, float], low: float, high: float) -> None:
    assert low <= psi(expected, actual) <= high


@settings(max_examples=50)
@given(
    st.dictionaries(st.sampled_from("abcdef"), st.integers(1, 1000), min_size=1),
    st.dictionaries(st.sampled_from("abcdef"), st.integers(1, 1000), min_size=1),
)
def test_psi_is_symmetric_and_non_negative(a: dict[str, int], b: dict[str, int]) -> None:
    assert psi(a, b) >= 0.0
    assert math.isclose(psi(a, b), psi(b, a), rel_tol=1e-9, abs_tol=1e-12)


def test_baseline_flags_a_spike_and_is_not_taught_by_it() -> None:
    rng = np.random.default_rng(2)
    b = RobustBaseline(floor=1.0)
    for v in rng.poisson(100, 60):
        b.update(float(v), clip=3.0)
    assert abs(b.score(100.0)) < 2
    assert b.score(400.0) > 10
    mean_before = b.mean
    for _ in range(3):
        b.update(400.0, clip=3.0)  # an attack: clipped, the mean barely moves
    assert b.mean < mean_before * 1.1
    assert b.score(400.0) > 10


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=200))
def test_baseline_stays_finite_and_bounded_by_the_data(values: list[float]) -> None:
    b = RobustBaseline()
    for v in values:
        b.update(v)
    assert min(values) - 1e-6 <= b.mean <= max(values) + 1e-6
    assert b.mad >= 0 and math.isfinite(b.score(max(values)))
