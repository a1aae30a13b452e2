"""What detectors produce and what the control plane stores: :class:`Signal` and :class:`Alert`.

A *signal* is one detector's finding at one moment (pure data, no id); the correlator
(:mod:`meshward.detection.correlate`) turns signals into *alerts*: deduplicated per subject and
detector within an interval, with a count, a state (open, acknowledged, resolved) and the
evidence of the last signal (the numbers that crossed which threshold, the window, sample
request ids).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SEVERITIES", "Alert", "Signal", "severity_rank"]

SEVERITIES = ("low", "medium", "high", "critical")


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


@dataclass(frozen=True, slots=True)
class Signal:
    detector: str  # volume | auth | violations | exfiltration | extraction | drift
    subject: str  # a SPIFFE ID, a model ("ns/service model@version") or an address
    severity: str
    summary: str  # one line for people
    evidence: dict[str, Any] = field(default_factory=dict)
    workload: str | None = None  # NS/NAME of the protected workload that saw it (policy lookup)


@dataclass(slots=True)
class Alert:
    id: str
    time: str  # first seen (ISO 8601 UTC)
    updated: str  # last signal
    detector: str
    severity: str
    subject: str
    state: str  # open | acknowledged | resolved
    summary: str
    evidence: dict[str, Any]
    count: int = 1
    workload: str | None = None
    policy: str | None = None  # NS/NAME of the DetectionPolicy that asked for it (None: defaults)
    response: str | None = None  # what was done: "quarantine <id>", "dry-run: would quarantine ..."
    acknowledged_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time,
            "updated": self.updated,
            "detector": self.detector,
            "severity": self.severity,
            "subject": self.subject,
            "state": self.state,
            "summary": self.summary,
            "count": self.count,
            "evidence": self.evidence,
            "workload": self.workload,
            "policy": self.policy,
            "response": self.response,
            "acknowledged_by": self.acknowledged_by,
        }
