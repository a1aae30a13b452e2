"""``DetectionPolicy`` (which detectors watch which workloads, and the response) and ``AlertSink``.

```yaml
apiVersion: meshward.dev/v1alpha1
kind: DetectionPolicy
metadata: {name: guard-fraud, namespace: ml}
spec:
  selector: {matchLabels: {app: fraud-model}}      # the protected workloads
  detectors:                                        # volume | auth | violations | exfiltration | extraction | drift
  - {type: extraction, threshold: 0.90, minQueries: 50}
  - {type: violations, maxDenialsPerMinute: 20}
  response: {quarantine: {duration: 10m}, mode: enforce}   # or dryRun; no response = alert only
---
apiVersion: meshward.dev/v1alpha1
kind: AlertSink
metadata: {name: oncall, namespace: meshward-system}
spec: {type: webhook, url: "http://127.0.0.1:9000/hook", format: slack, minSeverity: medium}
```

Each detector type takes only its own parameters (another type's parameter is refused, so a
misplaced threshold is an error instead of a silent default). A mesh with no DetectionPolicy still
runs the ``auth``, ``violations`` and ``volume`` detectors with conservative defaults (see
:mod:`meshward.detection.settings`). Alerts go to the audit trail (and from there to the Mesh's
SIEM sinks) always, and to every ``AlertSink`` of the mesh.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from meshward.resources.base import Resource, Selector, Strict, register
from meshward.resources.mesh import parse_duration

__all__ = [
    "DETECTOR_PARAMETERS",
    "DETECTOR_TYPES",
    "AlertSink",
    "AlertSinkSpec",
    "DetectionPolicy",
    "DetectionPolicySpec",
    "DetectionResponse",
    "DetectorSpec",
    "Quarantine",
]

DetectorType = Literal["volume", "auth", "violations", "exfiltration", "extraction", "drift"]
Severity = Literal["low", "medium", "high", "critical"]
DETECTOR_TYPES: tuple[str, ...] = ("volume", "auth", "violations", "exfiltration", "extraction", "drift")

#: The YAML parameters each detector type accepts (besides ``type`` and ``severity``).
DETECTOR_PARAMETERS: dict[str, tuple[str, ...]] = {
    "volume": ("maxRequestsPerMinute", "maxBytesPerMinute", "maxTokensPerMinute", "sensitivity", "newPairs"),
    "auth": ("maxRefusalsPerMinute",),
    "violations": ("maxDenialsPerMinute", "maxDistinctPathsPerMinute"),
    "exfiltration": ("maxFindingsPerMinute", "maxResponseBytesPerMinute", "sensitivity"),
    "extraction": ("threshold", "minQueries", "maxSamples", "maxQueriesPerMinute"),
    "drift": ("psi", "baseline", "window", "latencyFactor"),
}


class DetectorSpec(Strict):
    """One detector and its thresholds (unset: the detector's default)."""

    type: DetectorType
    severity: Severity | None = None
    # volume
    max_requests_per_minute: int | None = Field(default=None, alias="maxRequestsPerMinute", ge=1)
    max_bytes_per_minute: int | None = Field(default=None, alias="maxBytesPerMinute", ge=1)
    max_tokens_per_minute: int | None = Field(default=None, alias="maxTokensPerMinute", ge=1)
    sensitivity: float | None = Field(default=None, ge=1.0, le=100.0)  # robust z-score (MADs)
    new_pairs: bool | None = Field(default=None, alias="newPairs")
    # auth
    max_refusals_per_minute: int | None = Field(default=None, alias="maxRefusalsPerMinute", ge=1)
    # violations
    max_denials_per_minute: int | None = Field(default=None, alias="maxDenialsPerMinute", ge=1)
    max_distinct_paths_per_minute: int | None = Field(default=None, alias="maxDistinctPathsPerMinute", ge=2)
    # exfiltration
    max_findings_per_minute: int | None = Field(default=None, alias="maxFindingsPerMinute", ge=1)
    max_response_bytes_per_minute: int | None = Field(default=None, alias="maxResponseBytesPerMinute", ge=1)
    # extraction (PRADA)
    threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    min_queries: int | None = Field(default=None, alias="minQueries", ge=10, le=10000)
    max_samples: int | None = Field(default=None, alias="maxSamples", ge=10, le=10000)
    max_queries_per_minute: int | None = Field(default=None, alias="maxQueriesPerMinute", ge=1)
    # drift
    psi: float | None = Field(default=None, gt=0.0)
    baseline: int | None = Field(default=None, ge=20, le=100000)
    window: int | None = Field(default=None, ge=20, le=100000)
    latency_factor: float | None = Field(default=None, alias="latencyFactor", gt=1.0)

    @model_validator(mode="after")
    def _own_parameters(self) -> DetectorSpec:
        allowed = set(DETECTOR_PARAMETERS[self.type])
        for name, info in type(self).model_fields.items():
            alias = info.alias or name
            if alias in ("type", "severity") or getattr(self, name) is None:
                continue
            if alias not in allowed:
                raise ValueError(
                    f"{alias!r} is not a parameter of the {self.type} detector "
                    f"(it takes: {', '.join(DETECTOR_PARAMETERS[self.type])})"
                )
        return self


class Quarantine(Strict):
    duration: str = "10m"

    @field_validator("duration")
    @classmethod
    def _duration(cls, v: str) -> str:
        seconds = parse_duration(v)
        if not 1 <= seconds <= 7 * 86400:
            raise ValueError("quarantine duration must be between 1s and 7d")
        return v

    @property
    def seconds(self) -> float:
        return parse_duration(self.duration)


class DetectionResponse(Strict):
    quarantine: Quarantine | None = None
    mode: Literal["enforce", "dryRun"] = "enforce"


class DetectionPolicySpec(Strict):
    selector: Selector = Field(default_factory=Selector)
    detectors: list[DetectorSpec] = Field(min_length=1)
    response: DetectionResponse | None = None

    @field_validator("detectors")
    @classmethod
    def _once_each(cls, value: list[DetectorSpec]) -> list[DetectorSpec]:
        seen: set[str] = set()
        for d in value:
            if d.type in seen:
                raise ValueError(f"detector type {d.type!r} listed twice")
            seen.add(d.type)
        return value


@register
class DetectionPolicy(Resource[DetectionPolicySpec]):
    kind_name = "DetectionPolicy"


class AlertSinkSpec(Strict):
    """A generic webhook: one POST per alert, JSON (the alert) or Slack-compatible (``text``)."""

    type: Literal["webhook"] = "webhook"
    url: str = Field(pattern=r"^https?://", max_length=2048)
    format: Literal["json", "slack"] = "json"
    min_severity: Severity = Field(default="low", alias="minSeverity")
    detectors: list[DetectorType] = Field(default_factory=list)  # empty: every detector


@register
class AlertSink(Resource[AlertSinkSpec]):
    kind_name = "AlertSink"
