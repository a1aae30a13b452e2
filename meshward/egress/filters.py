"""The egress-only filters: who may call out (authorization), the injected key, token spend.

They implement the filter contract (:mod:`meshward.filters.base`) and run in the outbound chain
for external destinations (:mod:`meshward.egress.chain`), around the shared filters (rate limits,
DLP, telemetry):

- :class:`EgressAuthzFilter` decides with the calling workload's EgressPolicies (403 naming the
  host and why; the decision, policy and rule go to telemetry and audit like inbound authz).
- :class:`CredentialFilter` removes every key the app sent (``Authorization``, ``api-key``,
  ``x-api-key``, the service's own header) and sets the service's header from the secret
  (503 when the sidecar cannot have it: fail closed, nothing leaves without the right key).
- :class:`SpendFilter` reads the token usage of OpenAI-compatible answers (JSON or streamed)
  and counts it per calling identity, host and model (``meshward_egress_tokens_total``), with its
  cost when the ExternalService has ``pricing`` (``meshward_egress_cost_total``).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from meshward.ai.protocol import needs_body
from meshward.ai.usage import UsageMeter
from meshward.authz.attributes import RequestAttributes
from meshward.egress.credentials import CredentialCache
from meshward.egress.engine import EgressEngine, ExternalEntry
from meshward.filters.base import Denial, Filter, RequestContext, SidecarRuntime

__all__ = ["CredentialFilter", "EgressAuthzFilter", "EgressMetrics", "SpendFilter", "egress_metrics"]

_APP_KEYS = ("authorization", "api-key", "x-api-key")
_METERED = frozenset({"chat", "completion", "embed"})
_MAX_MODELS = 256


class EgressMetrics:
    """Egress counters of one sidecar process (a runtime service: see :func:`egress_metrics`)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.requests = Counter(
            "meshward_egress_requests",
            "External calls decided by the outbound sidecar",
            ["host", "decision"],
            registry=registry,
        )
        self.tokens = Counter(
            "meshward_egress_tokens",
            "Tokens spent on external AI APIs, by calling identity, host and model",
            ["source_principal", "host", "model", "type"],
            registry=registry,
        )
        self.cost = Counter(
            "meshward_egress_cost",
            "Cost of the tokens spent on external AI APIs (ExternalService pricing), by identity and model",
            ["source_principal", "host", "model"],
            registry=registry,
        )
        self._models: set[str] = set()

    def model(self, name: str | None) -> str:
        """Model names come from bodies: bound the label values."""
        if name is None:
            return "unknown"
        if name in self._models:
            return name
        if len(self._models) < _MAX_MODELS:
            self._models.add(name)
            return name
        return "other"


def egress_metrics(runtime: SidecarRuntime) -> EgressMetrics:
    return runtime.service(EgressMetrics, lambda: EgressMetrics(runtime.metrics_registry))


def attributes(ctx: RequestContext, now: float) -> RequestAttributes:
    """What egress rules see: the external host and port, the caller is this workload."""
    return RequestAttributes(
        method=ctx.method,
        path=ctx.path,
        host=ctx.host,
        port=ctx.destination_port,
        principal=ctx.peer.principal,
        namespace=ctx.peer.namespace,
        source_ip=ctx.peer.ip,
        headers=ctx.headers,
        model=ctx.ai.model,
        operation=ctx.ai.operation,
        now=now,
    )


def egress_denial(host: str, reason: str, why: str, policy: str | None = None) -> Denial:
    """403 with a body naming the host and why (the one shape of every egress refusal)."""
    return Denial(
        kind="authz",
        status=403,
        message=f"egress to {host} denied: {reason}",
        policy=policy,
        body={"host": host, "reason": why},
    )


class EgressAuthzFilter(Filter):
    name = "egress_authz"
    eager_safe = True  # pure policy evaluation

    def __init__(self, engine: EgressEngine, entry: ExternalEntry, metrics: EgressMetrics) -> None:
        self.engine = engine
        self.entry = entry
        self.metrics = metrics
        self._body = engine.uses_model and entry.protocol == "openai"
        self._allowed = metrics.requests.labels(entry.host, "allow")  # children looked up once
        self._denied = metrics.requests.labels(entry.host, "deny")

    def wants_request_body(self, ctx: RequestContext) -> bool:
        return self._body and needs_body(ctx.ai, ctx.method, ctx.headers)

    async def on_request(self, ctx: RequestContext) -> Denial | None:
        decision = self.engine.evaluate(attributes(ctx, time.time()))
        ctx.scratch["authz.reason"] = decision.reason
        ctx.scratch["egress.service"] = self.entry.service
        if decision.allowed:
            ctx.policy, ctx.rule = decision.policy, decision.rule
            self._allowed.inc()
            return None
        ctx.decision = "deny"
        self._denied.inc()
        return egress_denial(ctx.host, decision.reason, "egress_policy")


class CredentialFilter(Filter):
    name = "egress_credential"
    eager_safe = True  # a first fetch waits with asyncio.wait_for (no Task needed up front)

    def __init__(self, entry: ExternalEntry, cache: CredentialCache) -> None:
        assert entry.secret is not None
        self.secret = entry.secret
        self.header = entry.header.lower()
        self.format = entry.format
        self.entry = entry
        self._cache = cache

    async def on_request(self, ctx: RequestContext) -> Denial | None:
        headers = ctx.headers
        for name in _APP_KEYS:
            headers.pop(name, None)
        headers.pop(self.header, None)
        value = await self._cache.get(self.secret)
        if value is None:
            return Denial(
                kind="unavailable",
                status=503,
                message=f"credential for {self.entry.host} is unavailable to this workload",
                body={"host": self.entry.host, "reason": "credential_unavailable"},
            )
        headers[self.header] = self.format.replace("{secret}", value)
        return None


class SpendFilter(Filter):
    """Token usage of external LLM calls per identity, host and model; sets ``ctx.tokens``."""

    name = "egress_spend"
    eager_safe = True

    def __init__(self, entry: ExternalEntry, metrics: EgressMetrics) -> None:
        self.host = entry.host
        self.entry = entry
        self.metrics = metrics

    def wants_request_body(self, ctx: RequestContext) -> bool:
        """The model of a JSON call (spend is counted per model) and the prompt estimate."""
        return ctx.ai.operation in _METERED and needs_body(ctx.ai, ctx.method, ctx.headers)

    async def on_request(self, ctx: RequestContext) -> Denial | None:
        if ctx.ai.operation in _METERED:
            ctx.scratch["egress.meter"] = UsageMeter()
        return None

    def on_response_headers(self, ctx: RequestContext, status: int, headers: list[tuple[str, str]]) -> bool:
        meter = ctx.scratch.get("egress.meter")
        if meter is not None:
            meter.start(status, headers)
        return False

    def on_response_chunk(self, ctx: RequestContext, chunk: bytes) -> bytes:
        meter = ctx.scratch.get("egress.meter")
        if meter is not None:
            meter.feed(chunk)
        return chunk

    def on_response_end(self, ctx: RequestContext) -> bytes:
        self._count(ctx)
        return b""

    def on_complete(self, ctx: RequestContext) -> None:
        self._count(ctx)  # a stream cut short never reached on_response_end

    def _count(self, ctx: RequestContext) -> None:
        meter: Any = ctx.scratch.pop("egress.meter", None)
        if meter is None:
            return
        meter.finish()
        if not meter.started:
            return
        usage = meter.result(ctx.ai.prompt_tokens_estimate)
        if not ctx.tokens.total:
            ctx.tokens = usage
        labels = (ctx.peer.principal or "unknown", self.host, self.metrics.model(ctx.ai.model))
        if usage.input:
            self.metrics.tokens.labels(*labels, "input").inc(usage.input)
        if usage.output:
            self.metrics.tokens.labels(*labels, "output").inc(usage.output)
        price = self.entry.price(ctx.ai.model)
        if price is not None and usage.total:
            cost = (usage.input * price[0] + usage.output * price[1]) / 1_000_000
            ctx.scratch["egress.cost"] = cost
            self.metrics.cost.labels(*labels).inc(cost)
