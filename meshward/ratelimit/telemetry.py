"""Rate-limit telemetry: plain counters (always) and Prometheus collectors (when served).

Counters live in the runtime's ``RateLimitShared`` (:mod:`meshward.filters.ratelimit`) so they
outlive config generations and can be read without a metrics registry. With ``runtime.metrics_registry`` set, the same events
are exported:

- ``meshward_ratelimit_limited_total{policy,limit,dimension,mode}`` — requests refused
  (``mode="enforce"``) or that a shadow limit would have refused (``mode="shadow"``);
- ``meshward_ratelimit_backend_failures_total{limit,failure_mode}`` — checks the store could
  not answer, and whether the limit then failed ``open`` or ``closed``;
- ``gen_ai_client_token_usage`` — histogram of tokens per call, as in the OpenTelemetry
  GenAI semantic conventions (``gen_ai.token.type`` input|output → label ``gen_ai_token_type``;
  ``gen_ai_request_model``, ``gen_ai_operation_name``) plus the caller (``source_principal``)
  and whether the count was estimated. Model and caller label values are capped (256 each,
  then ``other``): model names come from request bodies and must not grow memory.
"""

from __future__ import annotations

from collections import Counter as Tally
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["TOKEN_BUCKETS", "RateLimitTelemetry"]

# The GenAI semantic conventions' advised buckets for gen_ai.client.token.usage.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)


class RateLimitTelemetry:
    """Counts what the rate-limit filter did; one per sidecar process."""

    def __init__(self, max_label_values: int = 256) -> None:
        self.tally: Tally[tuple[str, ...]] = Tally()
        # Model names come from request bodies: bound the label values a caller can create.
        self.max_label_values = max_label_values
        self._models: set[str] = set()
        self._principals: set[str] = set()
        # (model, operation, caller, estimated) → [input total, output total, hist in, hist out]
        self._series: dict[tuple[str | None, str, str | None, bool], list[Any]] = {}
        self._registry: Any = None
        self._limited: Counter | None = None
        self._failures: Counter | None = None
        self._tokens: Histogram | None = None

    def bind(self, registry: CollectorRegistry | None) -> None:
        """Register the Prometheus collectors once per registry."""
        if registry is None or registry is self._registry:
            return
        self._registry = registry
        self._series.clear()  # cached children belong to the previous registry
        self._limited = Counter(
            "meshward_ratelimit_limited",
            "Requests refused by a rate limit (mode=shadow: would have been refused)",
            ["policy", "limit", "dimension", "mode"],
            registry=registry,
        )
        self._failures = Counter(
            "meshward_ratelimit_backend_failures",
            "Rate-limit checks the store could not answer, by the limit's failure mode",
            ["limit", "failure_mode"],
            registry=registry,
        )
        self._tokens = Histogram(
            "gen_ai_client_token_usage",
            "Number of input and output tokens used (OpenTelemetry gen_ai.client.token.usage)",
            [
                "gen_ai_token_type",
                "gen_ai_request_model",
                "gen_ai_operation_name",
                "source_principal",
                "estimated",
            ],
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )

    def limited(self, policy: str, limit: str, dimension: str, mode: str) -> None:
        self.tally["limited", policy, limit, dimension, mode] += 1
        if self._limited is not None:
            self._limited.labels(policy, limit, dimension, mode).inc()

    def backend_failure(self, limit_id: str, failure_mode: str) -> None:
        self.tally["backend_failure", limit_id, failure_mode] += 1
        if self._failures is not None:
            self._failures.labels(limit_id, failure_mode).inc()

    def tokens(
        self,
        model: str | None,
        operation: str,
        principal: str | None,
        used_in: int,
        used_out: int,
        estimated: bool,
    ) -> None:
        series = self._series.get((model, operation, principal, estimated))
        if series is None:
            series = self._new_series(model, operation, principal, estimated)
        series[0] += used_in
        series[1] += used_out
        if series[2] is not None:
            series[2].observe(used_in)
            series[3].observe(used_out)

    def _new_series(
        self, model: str | None, operation: str, principal: str | None, estimated: bool
    ) -> list[Any]:
        """Labels resolved once per (model, operation, caller, estimated): ``labels()`` is slow."""
        m = _bounded(self._models, model or "unknown", self.max_label_values)
        p = _bounded(self._principals, principal or "unauthenticated", self.max_label_values)
        est = "true" if estimated else "false"
        series: list[Any] = [0, 0, None, None]
        if self._tokens is not None:
            series[2] = self._tokens.labels("input", m, operation, p, est)
            series[3] = self._tokens.labels("output", m, operation, p, est)
        if len(self._series) < 4 * self.max_label_values:  # bounded like the label values
            self._series[(model, operation, principal, estimated)] = series
        return series


def _bounded(seen: set[str], value: str, cap: int) -> str:
    """``value`` while fewer than ``cap`` distinct values were seen, then ``"other"``."""
    if value in seen:
        return value
    if len(seen) >= cap:
        return "other"
    seen.add(value)
    return value
