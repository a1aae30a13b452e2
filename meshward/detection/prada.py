"""PRADA: model-extraction detection from one caller's query stream (Juuti et al., 2019).

Method (per caller, in the model's inbound sidecar, on Open Inference Protocol v2 tensor rows):
for each query ``x`` with predicted class ``c``, ``d`` = the minimum L2 distance from ``x`` to the
caller's *growing set* ``G_c`` of earlier queries of that class (an exact repeat is skipped); ``d`` joins the distance set
``D``; if ``d`` exceeds the class's threshold ``T_c`` the query joins ``G_c`` and
``T_c = max(T_c, mean(D_Gc) − std(D_Gc))``. Natural queries give distances that look normally
distributed; the synthetic queries of an extraction attack (small perturbations of seeds, line
searches along decision boundaries) give a spike of tiny distances among larger ones. Once
``|D| ≥ min_queries``, Shapiro–Wilk's W over ``D`` below ``threshold`` (δ) raises the alarm.

State bound per caller: at most ``max_samples`` vectors per class in ``G_c`` (further queries
are still measured, no longer kept), the last ``window`` distances of ``D``, at most
``max_classes`` classes. :class:`PradaMonitor` keeps at most ``max_callers`` callers (least
recently seen dropped first). W is recomputed every ``every`` queries, not on each one.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from meshward.detection.stats import shapiro_wilk_w

__all__ = ["FeatureScale", "PradaMonitor", "PradaSettings", "PradaState", "PradaVerdict"]


@dataclass(frozen=True, slots=True)
class PradaSettings:
    threshold: float = 0.90  # δ: W below it raises
    min_queries: int = 50
    max_samples: int = 256  # per class in the growing set
    window: int = 500  # distances kept for the test
    every: int = 5  # recompute W every this many queries
    max_classes: int = 32
    max_callers: int = 1024


@dataclass(frozen=True, slots=True)
class PradaVerdict:
    queries: int  # every query seen from the caller
    distances: int  # |D| in the window
    w: float | None  # None until min_queries distances
    alarm: bool


class _Growing:
    """One class's growing set (a preallocated array) and its distance statistics."""

    __slots__ = ("count", "d_n", "d_sum", "d_sum2", "points", "threshold")

    def __init__(self, dim: int, cap: int) -> None:
        import numpy as np

        self.points = np.zeros((cap, dim), dtype=np.float64)
        self.count = 0
        self.threshold = 0.0
        self.d_n = 0
        self.d_sum = 0.0
        self.d_sum2 = 0.0

    def nearest(self, x: Any, scale: Any) -> float:
        import numpy as np

        diff = (self.points[: self.count] - x) / scale
        return float(math.sqrt(float(np.min(np.einsum("ij,ij->i", diff, diff)))))

    def add(self, x: Any, d: float) -> None:
        if self.count < self.points.shape[0]:
            self.points[self.count] = x
            self.count += 1
        self.d_n += 1
        self.d_sum += d
        self.d_sum2 += d * d
        mean = self.d_sum / self.d_n
        std = math.sqrt(max(0.0, self.d_sum2 / self.d_n - mean * mean))
        self.threshold = max(self.threshold, mean - std)


class FeatureScale:
    """Running per-feature spread of a model's inputs (Welford), shared by its callers."""

    __slots__ = ("m2", "mean", "n")

    def __init__(self, dim: int) -> None:
        import numpy as np

        self.n = 0
        self.mean = np.zeros(dim)
        self.m2 = np.zeros(dim)

    def update(self, x: Any) -> Any:
        """Learn ``x``; the current standard deviation per feature (1 where not known yet)."""
        import numpy as np

        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        if self.n < 2:
            return np.ones_like(x)
        std = np.sqrt(self.m2 / (self.n - 1))
        return np.where(std > 1e-12, std, 1.0)


@dataclass
class PradaState:
    """One caller's PRADA state (see the module docstring for the bound)."""

    settings: PradaSettings
    classes: dict[tuple[int, str], _Growing] = field(default_factory=dict)
    distances: deque[float] = field(default_factory=deque)
    queries: int = 0
    last_w: float | None = None

    def observe(self, row: Sequence[float] | Any, label: str, scale: Any = None) -> PradaVerdict:
        """One query (its feature row and predicted class); ``scale``: per-feature spread."""
        import numpy as np

        s = self.settings
        x = np.asarray(row, dtype=np.float64)
        if scale is None:
            scale = np.ones_like(x)
        self.queries += 1
        key = (x.shape[0], label)
        grow = self.classes.get(key)
        if grow is None:
            if len(self.classes) >= s.max_classes:
                return self.verdict()
            grow = self.classes[key] = _Growing(x.shape[0], s.max_samples)
            grow.add(x, 0.0)
            return self.verdict()
        d = grow.nearest(x, scale)
        if d <= 1e-9:  # a repeated query (a retry, a health probe) tells an attacker nothing new
            return self.verdict()
        self.distances.append(d)
        if len(self.distances) > s.window:
            self.distances.popleft()
        if d > grow.threshold:
            grow.add(x, d)
        if len(self.distances) >= s.min_queries and (self.queries % s.every == 0 or self.last_w is None):
            self.last_w = shapiro_wilk_w([math.log(v + 1e-9) for v in self.distances])
        return self.verdict()

    def verdict(self) -> PradaVerdict:
        w = self.last_w if len(self.distances) >= self.settings.min_queries else None
        return PradaVerdict(
            self.queries, len(self.distances), w, w is not None and w < self.settings.threshold
        )

    def size(self) -> int:
        """Stored numbers (vectors' components + distances): the memory bound in practice."""
        return sum(g.count * g.points.shape[1] for g in self.classes.values()) + len(self.distances)


class PradaMonitor:
    """PRADA state per caller, bounded in callers (least recently seen evicted first)."""

    def __init__(self, settings: PradaSettings) -> None:
        self.settings = settings
        self.callers: OrderedDict[str, PradaState] = OrderedDict()
        self.scales: dict[int, FeatureScale] = {}  # by input width (one model per sidecar)

    def observe(self, caller: str, row: Sequence[float], label: str) -> PradaVerdict:
        state = self.callers.get(caller)
        if state is None:
            state = self.callers[caller] = PradaState(self.settings)
            while len(self.callers) > self.settings.max_callers:
                self.callers.popitem(last=False)
        else:
            self.callers.move_to_end(caller)
        import numpy as np

        x = np.asarray(row, dtype=np.float64)
        scale = self.scales.get(x.shape[0])
        if scale is None:
            if len(self.scales) >= 8:
                self.scales.clear()
            scale = self.scales[x.shape[0]] = FeatureScale(x.shape[0])
        return state.observe(x, label, scale.update(x))

    def size(self) -> int:
        return sum(s.size() for s in self.callers.values())
