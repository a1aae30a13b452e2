"""``ModelRoute``: versions of a service as subsets, routing rules, mirroring, automated rollout.

A route names one ``service`` of its namespace and splits its endpoints into ``subsets`` by
label (``stable: {version: v1}``, ``canary: {version: v2}``). ``rules`` are matched in order
(caller principals, request headers, model names); the first match routes by its weights; no
match routes by the rollout's weights (all to ``stable`` without a rollout). ``mirror`` shadows a
share of requests to a subset. ``rollout`` drives the canary weight through ``steps``, checked
every ``interval`` against ``checks`` (see :mod:`meshward.rollout.analysis`).

The canary weight the control plane set last is the annotation
``rollout.meshward.dev/weight`` of the stored route (each step is a config generation).
``aliases`` rewrites model names per subset: callers ask for ``fraud`` and the canary gets
``fraud-v2`` (body ``model`` field or the OIP path).
"""

from __future__ import annotations

import itertools
import re

from pydantic import Field, field_validator, model_validator

from meshward.identity.spiffe import InvalidSpiffeId, parse_identity
from meshward.resources.base import Resource, Strict, register
from meshward.resources.mesh import parse_duration

__all__ = [
    "WEIGHT_ANNOTATION",
    "Check",
    "Destination",
    "Mirror",
    "ModelRoute",
    "ModelRouteSpec",
    "Rollout",
    "RouteMatch",
    "RouteRule",
]

WEIGHT_ANNOTATION = "rollout.meshward.dev/weight"
_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
_STICKY = re.compile(r"^(source\.principal|request\.headers\[[A-Za-z0-9!#$%&'*+.^_`|~-]+\]|none)$")
METRICS = (
    "successRate",
    "latencyP99",
    "dlpFindingsPer1k",
    "authzDenials",
    "alerts",
    "mirrorDiffRate",
)


class RouteMatch(Strict):
    """Every listed field must match (empty = any); headers match exactly (names case-blind)."""

    principals: list[str] = Field(default_factory=list, max_length=256)
    headers: dict[str, str] = Field(default_factory=dict)
    models: list[str] = Field(default_factory=list, max_length=256)

    @field_validator("principals")
    @classmethod
    def _identities(cls, v: list[str]) -> list[str]:
        for text in v:
            if "*" in text:
                continue
            try:
                parse_identity(text, "trust-domain.invalid")
            except InvalidSpiffeId as exc:
                raise ValueError(str(exc)) from exc
        return v


class Destination(Strict):
    subset: str = Field(min_length=1, max_length=63, pattern=_NAME)
    weight: int = Field(default=100, ge=0, le=100)


class RouteRule(Strict):
    match: RouteMatch = Field(default_factory=RouteMatch)
    route: list[Destination] = Field(min_length=1, max_length=16)

    @model_validator(mode="after")
    def _weights(self) -> RouteRule:
        if sum(d.weight for d in self.route) != 100:
            raise ValueError("route weights must add up to 100")
        return self


class Mirror(Strict):
    subset: str = Field(min_length=1, max_length=63, pattern=_NAME)
    percent: float = Field(default=100, gt=0, le=100)


class Check(Strict):
    """One analysis check: ``metric`` of the canary's window against ``min`` / ``max`` / ``maxMs``."""

    metric: str
    min: float | None = None
    max: float | None = None
    max_ms: float | None = Field(default=None, alias="maxMs")

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r} (one of {', '.join(METRICS)})")
        return v

    @model_validator(mode="after")
    def _one_limit(self) -> Check:
        if [self.min, self.max, self.max_ms].count(None) != 2:
            raise ValueError(f"check {self.metric!r} needs exactly one of min, max, maxMs")
        return self


class Rollout(Strict):
    steps: list[int] = Field(min_length=1, max_length=100)
    interval: str = "30s"
    threshold: int = Field(default=2, ge=1, le=100)
    checks: list[Check] = Field(default_factory=list, max_length=32)
    min_requests: int = Field(default=1, ge=0, le=1_000_000, alias="minRequests")

    @field_validator("steps")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if any(not 0 < s <= 100 for s in v) or any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError("steps must be increasing canary weights between 1 and 100")
        return v

    @field_validator("interval")
    @classmethod
    def _duration(cls, v: str) -> str:
        if not 0.1 <= parse_duration(v) <= 86400:
            raise ValueError("interval must be between 100ms and 24h")
        return v

    @property
    def interval_seconds(self) -> float:
        return parse_duration(self.interval)


class ModelRouteSpec(Strict):
    service: str = Field(min_length=1, max_length=63)
    subsets: dict[str, dict[str, str]] = Field(min_length=1, max_length=16)
    rules: list[RouteRule] = Field(default_factory=list, max_length=64)
    mirror: Mirror | None = None
    rollout: Rollout | None = None
    sticky_by: str = Field(default="source.principal", alias="stickyBy")
    aliases: dict[str, dict[str, str]] = Field(default_factory=dict)  # model → {subset: name}

    @field_validator("sticky_by")
    @classmethod
    def _sticky(cls, v: str) -> str:
        if not _STICKY.match(v):
            raise ValueError("stickyBy must be source.principal, request.headers[NAME] or none")
        return v

    @model_validator(mode="after")
    def _subsets_known(self) -> ModelRouteSpec:
        for name in self.subsets:
            if not re.match(_NAME, name):
                raise ValueError(f"invalid subset name {name!r}")
        named = [d.subset for r in self.rules for d in r.route]
        named += [self.mirror.subset] if self.mirror else []
        named += [s for targets in self.aliases.values() for s in targets]
        for subset in named:
            if subset not in self.subsets:
                raise ValueError(f"subset {subset!r} is not in subsets ({', '.join(self.subsets)})")
        if self.rollout is not None and not {"stable", "canary"} <= set(self.subsets):
            raise ValueError("a rollout needs subsets named stable and canary")
        return self


@register
class ModelRoute(Resource[ModelRouteSpec]):
    kind_name = "ModelRoute"

    @property
    def canary_weight(self) -> int:
        """The canary weight set by the rollout controller (0 before the first step)."""
        try:
            return max(0, min(100, int(self.metadata.annotations.get(WEIGHT_ANNOTATION, "0"))))
        except ValueError:
            return 0
