"""Pure statistics the detectors share: a robust EWMA baseline, Shapiro–Wilk's W, and the PSI.

- :class:`RobustBaseline`: an exponentially weighted mean and an exponentially weighted mean
  absolute deviation (a streaming stand-in for the median absolute deviation, MAD). A new value's
  score is ``(x - mean) / (1.4826 * mad + floor)``, a robust z-score. Values that score as
  anomalies are clipped before they update the baseline, so an attack does not teach the
  baseline that it is normal. Why EWMA + MAD and not a seasonal model: it needs O(1) state per
  subject, adapts to slow (daily) changes within its half-life, and with the MAD a single spike
  does not inflate the spread; a daily cycle is slower than the half-life (default 30 windows),
  so it is followed rather than flagged (see ``bench/detection.py`` for the false-alert rate on a
  seasonal day).
- :func:`shapiro_wilk_w`: the W statistic of Shapiro and Wilk with Royston's (1995, AS R94)
  approximation of the coefficients, in pure Python (no SciPy in the sidecar); tested against
  ``scipy.stats.shapiro``.
- :func:`psi`: the Population Stability Index between two histograms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

__all__ = ["RobustBaseline", "psi", "shapiro_wilk_w"]

_MAD_TO_SIGMA = 1.4826


@dataclass(slots=True)
class RobustBaseline:
    """EWMA mean and mean absolute deviation of one series (O(1) state)."""

    alpha: float = 1.0 / 30  # smoothing: half-life of about 20 windows
    floor: float = 1.0  # the smallest spread assumed (a flat series still has noise)
    mean: float = 0.0
    mad: float = 0.0
    count: int = 0

    def score(self, value: float) -> float:
        """The robust z-score of ``value`` against the baseline so far (0 before any data)."""
        if self.count == 0:
            return 0.0
        return (value - self.mean) / (_MAD_TO_SIGMA * self.mad + self.floor)

    def update(self, value: float, clip: float | None = None) -> None:
        """Learn ``value``; with ``clip`` (a z-score), anomalous values count as mean + clip·σ."""
        if self.count == 0:
            self.mean, self.mad, self.count = value, 0.0, 1
            return
        if clip is not None:
            bound = self.mean + clip * (_MAD_TO_SIGMA * self.mad + self.floor)
            value = min(value, bound)
        a = self.alpha if self.count >= 1 / self.alpha else 1.0 / (self.count + 1)
        deviation = abs(value - self.mean)
        self.mean += a * (value - self.mean)
        self.mad += a * (deviation - self.mad)
        self.count += 1


_C1 = (0.0, 0.221157, -0.147981, -2.07119, 4.434685, -2.706056)
_C2 = (0.0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633)


def _poly(coefficients: Sequence[float], x: float) -> float:
    result = 0.0
    for c in reversed(coefficients):
        result = result * x + c
    return result


@lru_cache(maxsize=64)
def _coefficients(n: int) -> tuple[float, ...]:
    """Royston's approximation of the Shapiro–Wilk coefficients a_1..a_{n/2} (largest first)."""
    if n == 3:
        return (math.sqrt(0.5),)
    half = n // 2
    inv = NormalDist().inv_cdf
    m = [inv((i - 0.375) / (n + 0.25)) for i in range(1, half + 1)]  # lower-tail: negative
    summ2 = 2 * sum(v * v for v in m)
    ssumm2 = math.sqrt(summ2)
    rsn = 1.0 / math.sqrt(n)
    a1 = _poly(_C1, rsn) - m[0] / ssumm2
    a = [0.0] * half
    if n > 5:
        a2 = -m[1] / ssumm2 + _poly(_C2, rsn)
        fac = math.sqrt((summ2 - 2 * m[0] ** 2 - 2 * m[1] ** 2) / (1 - 2 * a1**2 - 2 * a2**2))
        a[1] = a2
        start = 2
    else:
        fac = math.sqrt((summ2 - 2 * m[0] ** 2) / (1 - 2 * a1**2))
        start = 1
    a[0] = a1
    for i in range(start, half):
        a[i] = -m[i] / fac
    return tuple(a)


def shapiro_wilk_w(values: Sequence[float]) -> float:
    """Shapiro–Wilk's W of ``values`` (3 ≤ n ≤ 5000); 1.0 for a constant sample.

    W near 1: the sample looks normally distributed; small W: it does not.
    """
    n = len(values)
    if n < 3:
        raise ValueError("Shapiro–Wilk needs at least 3 values")
    if n > 5000:
        raise ValueError("Shapiro–Wilk's approximation holds up to 5000 values")
    x = sorted(values)
    mean = sum(x) / n
    ss = sum((v - mean) ** 2 for v in x)
    if ss <= 1e-300 * max(1.0, abs(mean)):
        return 1.0
    a = _coefficients(n)
    numerator = sum(a[i] * (x[n - 1 - i] - x[i]) for i in range(len(a)))
    return min(1.0, numerator * numerator / ss)


def psi(expected: Mapping[str, float], actual: Mapping[str, float], epsilon: float = 1e-4) -> float:
    """Population Stability Index: Σ (a − e)·ln(a / e) over the bins of both histograms.

    Counts are normalized to proportions; an empty bin counts as ``epsilon`` so the index stays
    finite. Rules of thumb: < 0.1 stable, 0.1–0.25 a shift, > 0.25 a major shift.
    """
    total_e = sum(expected.values())
    total_a = sum(actual.values())
    if total_e <= 0 or total_a <= 0:
        return 0.0
    index = 0.0
    for key in set(expected) | set(actual):
        e = max(expected.get(key, 0.0) / total_e, epsilon)
        a = max(actual.get(key, 0.0) / total_a, epsilon)
        index += (a - e) * math.log(a / e)
    return index
