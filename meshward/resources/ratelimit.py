"""``RateLimitPolicy``: request rates, concurrency and LLM token budgets for selected workloads.

A policy selects workloads by label and lists named limits. Each limit may match a subset of
requests (callers, namespaces, models, AI operations, paths, methods), keeps one bucket per
value of its ``key`` and bounds any of: requests per period (with a burst), requests in
flight, and LLM tokens per period. ``mode: shadow`` counts without blocking. ``backend`` is
``local`` (state in the sidecar) or a ``redis://`` URL shared by every replica.

Validation happens here (a typo is refused at ``apply``); compilation into the hot-path form
lives in :mod:`meshward.ratelimit.compile`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from meshward.identity.spiffe import InvalidSpiffeId, parse_identity
from meshward.patterns.strings import check_string_pattern
from meshward.resources.base import Resource, Selector, Strict, register

__all__ = [
    "PERIOD_SECONDS",
    "LimitMatch",
    "RateLimit",
    "RateLimitPolicy",
    "RateLimitPolicySpec",
    "RequestRate",
    "TokenBudget",
]

Period = Literal["second", "minute", "hour", "day"]
PERIOD_SECONDS: dict[str, int] = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}

_KEY = re.compile(
    r"^(|source\.principal|request\.model|request\.auth\.principal|request\.auth\.claims(\[[^\[\]]+\])+"
    r"|request\.headers\[[A-Za-z0-9!#$%&'*+.^_`|~-]+\])$"
)
_BACKEND = re.compile(r"^(local|rediss?://[^\s]+)$")
_AI_OPERATIONS = ("infer", "chat", "completion", "embed", "metadata", "admin", "health", "other")


class RequestRate(Strict):
    """``limit`` requests per ``per``, refilled continuously; ``burst`` is the bucket size."""

    limit: int = Field(ge=1, le=10_000_000)
    per: Period = "second"
    burst: int | None = Field(default=None, ge=1, le=10_000_000)


class TokenBudget(Strict):
    """At most ``limit`` LLM tokens per fixed window (``per``), counting input, output or both."""

    limit: int = Field(ge=1, le=10_000_000_000)
    per: Period = "minute"
    count: Literal["total", "input", "output"] = "total"


class LimitMatch(Strict):
    """Which requests a limit applies to; every listed field must match (empty = any)."""

    principals: list[str] = Field(default_factory=list)
    namespaces: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    ai_operations: list[str] = Field(default_factory=list, alias="aiOperations")
    paths: list[str] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=list)

    @field_validator("ai_operations")
    @classmethod
    def _known_operations(cls, v: list[str]) -> list[str]:
        for op in v:
            if op not in _AI_OPERATIONS:
                raise ValueError(f"unknown aiOperation {op!r} (one of {', '.join(_AI_OPERATIONS)})")
        return v

    @field_validator("principals", "namespaces", "models", "paths")
    @classmethod
    def _string_patterns(cls, v: list[str]) -> list[str]:
        """Istio's string forms, as authorization policies validate them."""
        for text in v:
            check_string_pattern(text)
        return v

    @field_validator("principals")
    @classmethod
    def _identities(cls, v: list[str]) -> list[str]:
        for text in v:
            if "*" in text:
                continue  # a glob over principals (Istio semantics)
            try:
                parse_identity(text, "trust-domain.invalid")  # the short form takes the mesh's later
            except InvalidSpiffeId as exc:
                raise ValueError(str(exc)) from exc
        return v

    @field_validator("paths")
    @classmethod
    def _absolute_paths(cls, v: list[str]) -> list[str]:
        for p in v:
            if p != "*" and not p.startswith("/") and not p.startswith("*"):
                raise ValueError(f"path {p!r} must start with '/' (or be a '*' pattern)")
        return v


class RateLimit(Strict):
    """One named limit: what it matches, how it is keyed, and what it bounds."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
    match: LimitMatch | None = None
    key: str = ""
    requests: RequestRate | None = None
    tokens: TokenBudget | None = None
    concurrency: int | None = Field(default=None, ge=1, le=1_000_000)
    mode: Literal["enforce", "shadow"] = "enforce"
    # None: closed when the limit has a token budget or a concurrency bound, open otherwise.
    failure_mode: Literal["closed", "open"] | None = Field(default=None, alias="failureMode")

    @field_validator("key")
    @classmethod
    def _known_key(cls, v: str) -> str:
        if not _KEY.match(v):
            raise ValueError(
                f"key {v!r} must be source.principal, request.model, request.auth.principal, "
                "request.auth.claims[NAME], request.headers[NAME] or '' (one bucket)"
            )
        return v

    @model_validator(mode="after")
    def _bounds_something(self) -> RateLimit:
        if self.requests is None and self.tokens is None and self.concurrency is None:
            raise ValueError(f"limit {self.name!r} bounds nothing: give requests, tokens or concurrency")
        return self

    @property
    def effective_failure_mode(self) -> Literal["closed", "open"]:
        if self.failure_mode is not None:
            return self.failure_mode
        return "closed" if self.tokens is not None or self.concurrency is not None else "open"


class RateLimitPolicySpec(Strict):
    selector: Selector = Field(default_factory=Selector)
    backend: str = "local"
    limits: list[RateLimit] = Field(min_length=1, max_length=64)

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if not _BACKEND.match(v):
            raise ValueError(f"backend {v!r} must be 'local' or a redis:// URL")
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> RateLimitPolicySpec:
        names = [limit.name for limit in self.limits]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"limit names must be unique in a policy: {', '.join(dupes)}")
        return self


@register
class RateLimitPolicy(Resource[RateLimitPolicySpec]):
    kind_name = "RateLimitPolicy"
