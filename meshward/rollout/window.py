"""Pure: what a caller's sidecar saw of each subset of a routed service, one window at a time.

Outcomes (status, latency) per subset and the mirror's comparisons accumulate in
:class:`WindowStats`; :meth:`WindowStats.drain` turns them into one audit event (OCSF Base
Event, ``unmapped.meshward.rollout``) that the sidecar's audit spool ships to the control plane,
where :mod:`meshward.rollout.analysis` reads them (a window is flushed a quarter of the route's
analysis interval after its first request, between 0.25 s and 5 s). Latencies are kept as a bounded sample per
window (the first ``MAX_SAMPLES``), enough for a p99 over a few seconds of traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from meshward.audit.ocsf import OCSF_VERSION

__all__ = ["LOG_NAME", "MAX_SAMPLES", "SubsetWindow", "WindowStats", "window_event"]

LOG_NAME = "rollout"
MAX_SAMPLES = 1000


@dataclass(slots=True)
class SubsetWindow:
    requests: int = 0
    errors: int = 0  # 5xx answers and local failures
    latency_ms: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "latency_ms": sorted(self.latency_ms)}


@dataclass(slots=True)
class WindowStats:
    service: str
    subsets: dict[str, SubsetWindow] = field(default_factory=dict)
    mirror_subset: str | None = None
    compared: int = 0
    differ: int = 0
    status_differ: int = 0
    latency_delta_ms: int = 0  # sum of (shadow - primary) latencies
    scheduled: bool = False  # a flush is pending on the loop

    def observe(self, subset: str, status: int, latency: float) -> None:
        w = self.subsets.get(subset)
        if w is None:
            w = self.subsets[subset] = SubsetWindow()
        w.requests += 1
        if status >= 500 or status == 0:
            w.errors += 1
        if len(w.latency_ms) < MAX_SAMPLES:
            w.latency_ms.append(int(latency * 1000))

    def compared_mirror(self, subset: str, differ: bool, status_differ: bool, delta: float) -> None:
        self.mirror_subset = subset
        self.compared += 1
        self.differ += differ
        self.status_differ += status_differ
        self.latency_delta_ms += int(delta * 1000)

    def empty(self) -> bool:
        return not self.subsets and not self.compared

    def drain(self, route: str, generation: int, time_ms: int) -> dict[str, Any] | None:
        """The window as an audit event, and a fresh window; None when nothing happened."""
        if self.empty():
            return None
        body: dict[str, Any] = {
            "service": self.service,
            "route": route,
            "generation": generation,
            "subsets": {k: v.to_json() for k, v in self.subsets.items()},
        }
        if self.compared:
            body["mirror"] = {
                "subset": self.mirror_subset,
                "compared": self.compared,
                "differ": self.differ,
                "status_differ": self.status_differ,
                "latency_delta_ms": self.latency_delta_ms // self.compared,
            }
        self.subsets = {}
        self.compared = self.differ = self.status_differ = self.latency_delta_ms = 0
        return window_event(body, time_ms)


def window_event(body: dict[str, Any], time_ms: int) -> dict[str, Any]:
    return {
        "class_uid": 0,
        "category_uid": 0,
        "activity_id": 99,
        "type_uid": 99,
        "time": time_ms,
        "severity_id": 1,
        "metadata": {"version": OCSF_VERSION, "log_name": LOG_NAME},
        "message": f"rollout window of {body['service']}",
        "unmapped": {"meshward": {"rollout": body}},
    }
