"""Which detectors watch a workload, with which thresholds: DetectionPolicies over the defaults.

A mesh with no DetectionPolicy still runs ``auth``, ``violations`` and ``volume`` with the
conservative :data:`DEFAULTS`. A DetectionPolicy whose selector matches a workload (same
namespace, or the mesh's root namespace) turns its detectors on for it, each parameter it sets
replacing the default; when several match, the first by namespace/name wins per detector type.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from meshward.resources.detection import DetectionPolicy, DetectionResponse, DetectorSpec

__all__ = ["ALWAYS_ON", "DEFAULTS", "DEFAULT_SEVERITY", "WorkloadDetection", "detection_for"]

DEFAULTS: dict[str, dict[str, Any]] = {
    "volume": {
        "maxRequestsPerMinute": 6000,
        "maxBytesPerMinute": 512 << 20,
        "maxTokensPerMinute": 1_000_000,
        "sensitivity": 10.0,
        "newPairs": True,
    },
    "auth": {"maxRefusalsPerMinute": 20},
    "violations": {"maxDenialsPerMinute": 30, "maxDistinctPathsPerMinute": 40},
    "exfiltration": {"maxFindingsPerMinute": 20, "maxResponseBytesPerMinute": 256 << 20, "sensitivity": 10.0},
    "extraction": {"threshold": 0.90, "minQueries": 50, "maxSamples": 256, "maxQueriesPerMinute": 600},
    "drift": {"psi": 0.25, "baseline": 200, "window": 200, "latencyFactor": 3.0},
}
DEFAULT_SEVERITY = {
    "volume": "medium",
    "auth": "high",
    "violations": "medium",
    "exfiltration": "high",
    "extraction": "high",
    "drift": "medium",
}
ALWAYS_ON = ("auth", "violations", "volume")


@dataclass(frozen=True)
class WorkloadDetection:
    """The detectors of one workload: type → parameters (YAML names), and where they came from."""

    detectors: dict[str, dict[str, Any]]
    policy: dict[str, str] = field(default_factory=dict)  # type → "ns/name" of the policy
    responses: dict[str, DetectionResponse] = field(default_factory=dict)  # policy → response

    def params(self, detector: str) -> dict[str, Any] | None:
        return self.detectors.get(detector)

    def response_for(self, detector: str) -> tuple[str | None, DetectionResponse | None]:
        ref = self.policy.get(detector)
        return ref, self.responses.get(ref) if ref else None


def _params(spec: DetectorSpec) -> dict[str, Any]:
    merged = dict(DEFAULTS[spec.type])
    merged.update(spec.model_dump(by_alias=True, exclude_none=True, exclude={"type"}))
    merged.setdefault("severity", DEFAULT_SEVERITY[spec.type])
    return merged


def detection_for(
    policies: Iterable[Any], namespace: str, labels: dict[str, str], root_namespace: str = "meshward-system"
) -> WorkloadDetection:
    """The detectors for the workload with ``labels`` in ``namespace``."""
    detectors = {t: dict(DEFAULTS[t], severity=DEFAULT_SEVERITY[t]) for t in ALWAYS_ON}
    origin: dict[str, str] = {}
    responses: dict[str, DetectionResponse] = {}
    matching = sorted(
        (
            p
            for p in policies
            if isinstance(p, DetectionPolicy)
            and p.metadata.namespace in (namespace, root_namespace)
            and p.spec.selector.matches(labels)
        ),
        key=lambda p: (p.metadata.namespace != namespace, p.metadata.namespace, p.metadata.name),
    )
    for policy in matching:
        ref = f"{policy.metadata.namespace}/{policy.metadata.name}"
        for spec in policy.spec.detectors:
            if spec.type in origin:
                continue
            detectors[spec.type] = _params(spec)
            origin[spec.type] = ref
        if policy.spec.response is not None:
            responses[ref] = policy.spec.response
    return WorkloadDetection(detectors, origin, responses)
