"""``DataProtectionPolicy``: which sensitive data a workload's traffic may carry, and what to do.

```yaml
apiVersion: meshward.dev/v1alpha1
kind: DataProtectionPolicy
metadata: {name: pii, namespace: llm}
spec:
  selector: {matchLabels: {app: chat}}
  direction: both                    # request | response | both
  detectors: [email, phone, credit_card, iban, national_id, ip_address, secrets,
              {name: employee-id, regex: "EMP-[0-9]{6}"}, {name: codenames, terms: [bluebird]}]
  action: mask                       # log | mask | redact | hash | block
  allow: ["support@example.com"]     # values never flagged (compared without separators, any case)
  limits: {maxResponseBytes: 1048576, maxRecords: 1000}
  failMode: closed                   # closed: refuse a body that cannot be inspected; open: pass, flagged
  maxBodyBytes: 8388608              # larger bodies cannot be inspected (failMode decides)
```

An empty ``detectors`` list means every built-in detector. User regexes must mean the same to
Hyperscan and to Python's ``re`` (no assertions, anchors or backreferences): they are checked
here, so a bad pattern is refused by ``meshward apply`` rather than by a sidecar.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from meshward.resources.base import Resource, Selector, Strict, register

__all__ = [
    "CustomDetector",
    "DataProtectionPolicy",
    "DataProtectionPolicySpec",
    "DetectorRef",
    "DlpAction",
    "ExportLimits",
]

DlpAction = Literal["log", "mask", "redact", "hash", "block"]

# Several policies combine and the strictest action wins (``meshward.dlp.policy.ACTION_STRICTNESS``).
# ``redact`` reveals nothing, ``hash`` keeps linkability (the same value gives the same tag),
# ``mask`` keeps a hint (the last four digits), ``log`` changes nothing.

BUILTIN_DETECTOR_NAMES = ("email", "phone", "credit_card", "iban", "national_id", "ip_address", "secrets")


class CustomDetector(Strict):
    """A user detector: a regex (every match is a finding) or a list of whole-word terms."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$")
    regex: str | None = Field(default=None, min_length=1, max_length=1024)
    terms: list[str] | None = Field(default=None, min_length=1, max_length=10000)

    @model_validator(mode="after")
    def _one_source(self) -> CustomDetector:
        if (self.regex is None) == (self.terms is None):
            raise ValueError(f"detector {self.name!r}: give exactly one of `regex` or `terms`")
        if self.name in BUILTIN_DETECTOR_NAMES:
            raise ValueError(f"detector {self.name!r}: the name of a built-in detector")
        if self.regex is not None:
            from meshward.dlp.detectors import user_regex_problem
            from meshward.dlp.scanner import hyperscan_problem

            problem = user_regex_problem(self.regex) or hyperscan_problem(self.regex.encode())
            if problem:
                raise ValueError(f"detector {self.name!r}: {problem}")
        if self.terms is not None and any(not t.strip() for t in self.terms):
            raise ValueError(f"detector {self.name!r}: empty term")
        return self


def _detector_kind(value: Any) -> str:
    return "builtin" if isinstance(value, str) else "custom"


# A built-in detector by name, or a user detector; tagged so an error names only the right form.
DetectorRef = Annotated[
    Annotated[str, Tag("builtin")] | Annotated[CustomDetector, Tag("custom")], Discriminator(_detector_kind)
]


class ExportLimits(Strict):
    """Bulk-extraction limits on responses, answered 403 with the policy name."""

    max_response_bytes: int | None = Field(default=None, alias="maxResponseBytes", ge=0)
    max_records: int | None = Field(default=None, alias="maxRecords", ge=0)


class DataProtectionPolicySpec(Strict):
    selector: Selector = Field(default_factory=Selector)
    direction: Literal["request", "response", "both"] = "both"
    detectors: list[DetectorRef] = Field(default_factory=list)
    action: DlpAction = "mask"
    allow: list[str] = Field(default_factory=list)
    limits: ExportLimits = Field(default_factory=ExportLimits)
    fail_mode: Literal["closed", "open"] = Field(default="closed", alias="failMode")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, alias="maxBodyBytes", ge=1024)

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, value: list[str | CustomDetector]) -> list[str | CustomDetector]:
        names: set[str] = set()
        for d in value:
            name = d if isinstance(d, str) else d.name
            if isinstance(d, str) and d not in BUILTIN_DETECTOR_NAMES:
                raise ValueError(f"unknown detector {d!r} (built-in: {', '.join(BUILTIN_DETECTOR_NAMES)})")
            if name in names:
                raise ValueError(f"detector {name!r} listed twice")
            names.add(name)
        return value

    def detector_names(self) -> list[str]:
        """The detector families this policy enforces (every built-in one when none is listed)."""
        if not self.detectors:
            return list(BUILTIN_DETECTOR_NAMES)
        return [d if isinstance(d, str) else d.name for d in self.detectors]

    def custom_detectors(self) -> list[CustomDetector]:
        return [d for d in self.detectors if isinstance(d, CustomDetector)]


@register
class DataProtectionPolicy(Resource[DataProtectionPolicySpec]):
    kind_name = "DataProtectionPolicy"
