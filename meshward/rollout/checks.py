"""Pure: the canary analysis checks — metric name → function(window) → value.

A :class:`Window` is what the control plane knows about one analysis interval of one route:
the outcomes its callers' sidecars reported per subset (requests, errors, latencies), the
mirror's comparisons, and security facts from the audit trail attributed to the canary's
identities (DLP findings in its answers, authorization denials of its own calls, detection
alerts about it). :data:`CHECKS` maps each ``metric`` of a ``ModelRoute`` check to a function
of the window; None means "no data" (the check neither passes nor fails that interval).

Other packages plug in with :func:`register_check` (a new metric) or
:func:`register_alert_source` (where detection alerts come from: e.g. ``meshward.detection``'s
store; by default alerts are Detection Finding records in the audit trail naming the canary).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from meshward.resources.modelroute import Check

__all__ = [
    "ALERT_SOURCES",
    "CHECKS",
    "AlertSource",
    "CheckResult",
    "SubsetStats",
    "Window",
    "evaluate",
    "limit_of",
    "p99",
    "register_alert_source",
    "register_check",
]


@dataclass(slots=True)
class SubsetStats:
    requests: int = 0
    errors: int = 0
    latency_ms: list[int] = field(default_factory=list)

    def add(self, requests: int, errors: int, latency_ms: Iterable[int]) -> None:
        self.requests += requests
        self.errors += errors
        self.latency_ms.extend(latency_ms)


@dataclass(slots=True)
class Window:
    start: float
    end: float
    canary: SubsetStats = field(default_factory=SubsetStats)
    stable: SubsetStats = field(default_factory=SubsetStats)
    canary_identities: frozenset[str] = frozenset()
    dlp_findings: int = 0  # in the canary's answers
    denials: int = 0  # requests by the canary that were denied
    alerts: int = 0  # detection alerts about the canary
    mirror_compared: int = 0
    mirror_differ: int = 0


@dataclass(frozen=True, slots=True)
class CheckResult:
    metric: str
    value: float | None
    limit: float
    kind: str  # "min" or "max"
    ok: bool | None  # None: no data this interval

    def to_json(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "value": self.value,
            "limit": self.limit,
            "op": self.kind,
            "ok": self.ok,
        }

    def describe(self) -> str:
        shown = "no data" if self.value is None else f"{self.value:g}"
        op = ">=" if self.kind == "min" else "<="
        return f"{self.metric} {shown} (limit {op} {self.limit:g})"


def p99(values: list[int]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(len(ordered) * 0.99) - 1)])


def _success_rate(w: Window) -> float | None:
    if not w.canary.requests:
        return None
    return round(100.0 * (w.canary.requests - w.canary.errors) / w.canary.requests, 3)


def _latency_p99(w: Window) -> float | None:
    return p99(w.canary.latency_ms)


def _dlp_per_1k(w: Window) -> float | None:
    if not w.canary.requests:
        return None if not w.dlp_findings else float(w.dlp_findings) * 1000.0
    return round(1000.0 * w.dlp_findings / w.canary.requests, 3)


def _mirror_diff_rate(w: Window) -> float | None:
    if not w.mirror_compared:
        return None
    return round(100.0 * w.mirror_differ / w.mirror_compared, 3)


CheckFn = Callable[[Window], float | None]
CHECKS: dict[str, CheckFn] = {
    "successRate": _success_rate,  # percent of the canary's requests not answered 5xx
    "latencyP99": _latency_p99,  # ms, as its callers saw it
    "dlpFindingsPer1k": _dlp_per_1k,  # DLP findings in its answers per 1,000 requests
    "authzDenials": lambda w: float(w.denials),  # its own calls that policy denied
    "alerts": lambda w: float(w.alerts),  # detection alerts about it
    "mirrorDiffRate": _mirror_diff_rate,  # percent of shadowed answers that differ
}

# (identities, start, end) -> number of alerts about them in [start, end)
AlertSource = Callable[[frozenset[str], float, float], int]
ALERT_SOURCES: list[AlertSource] = []


def register_check(metric: str, fn: CheckFn) -> None:
    CHECKS[metric] = fn


def register_alert_source(source: AlertSource) -> None:
    ALERT_SOURCES.append(source)


def limit_of(check: Check) -> tuple[float, str]:
    if check.min is not None:
        return check.min, "min"
    if check.max_ms is not None:
        return check.max_ms, "max"
    return float(check.max if check.max is not None else 0.0), "max"


def evaluate(checks: Iterable[Check], window: Window) -> list[CheckResult]:
    out = []
    for check in checks:
        limit, kind = limit_of(check)
        fn = CHECKS.get(check.metric)
        value = fn(window) if fn is not None else None
        ok = None if value is None else (value >= limit if kind == "min" else value <= limit)
        out.append(CheckResult(check.metric, value, limit, kind, ok))
    return out
