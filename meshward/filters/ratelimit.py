"""The rate-limit / quota filter: request rates, concurrency and LLM token budgets.

Always in the chain: with no RateLimitPolicy it only meters (the model is read from the body
when the path does not name it, and the token usage of every AI response is counted).
``on_request`` admits the request against every RateLimitPolicy limit that applies (see
:mod:`meshward.ratelimit.limiter`) or answers 429 with the IETF RateLimit fields (503 when
a fail-closed limit's store is down); admitted responses carry the fields of the tightest
enforced limit. Shadow limits only count. The response hooks read
the token usage as the body streams by (:class:`meshward.ai.usage.UsageMeter`, nothing is
held back) and ``on_complete`` — which runs once whatever happened — reconciles token
reservations with that usage, releases concurrency slots and records ``ctx.tokens``.

State that must outlive a config generation (local buckets, Redis clients, counters) is the
runtime's :class:`RateLimitShared` (``shared_state(runtime)``); this filter is rebuilt on every
generation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshward.ai.types import TokenUsage
from meshward.ai.usage import UsageMeter
from meshward.config.snapshot import MeshSnapshot
from meshward.filters.base import Denial, Filter, RequestContext, SidecarRuntime
from meshward.ratelimit.answer import answer_for, status_headers
from meshward.ratelimit.backend import Backend, LocalBackend
from meshward.ratelimit.compile import CompiledLimit, RequestFacts, compile_policies
from meshward.ratelimit.limiter import Admission, RateLimiter
from meshward.ratelimit.telemetry import RateLimitTelemetry

if TYPE_CHECKING:
    from meshward.ratelimit.redis_backend import RedisBackend

__all__ = ["RateLimitFilter", "RateLimitShared", "build", "shared_state"]

_METERED_OPERATIONS = frozenset({"chat", "completion", "embed"})
_SCRATCH = "ratelimit"


@dataclass
class RateLimitShared:
    """What survives config swaps in one sidecar (a :class:`SidecarRuntime` service)."""

    local: LocalBackend = field(default_factory=lambda: LocalBackend(time.time))
    redis: dict[str, RedisBackend] = field(default_factory=dict)  # by URL, connected lazily
    telemetry: RateLimitTelemetry = field(default_factory=RateLimitTelemetry)

    def backend(self, name: str) -> Backend:
        if name == "local":
            return self.local
        backend = self.redis.get(name)
        if backend is None:
            # redis (and what it pulls in, ~7 MB) is loaded only by a sidecar that enforces a
            # RateLimitPolicy with a redis:// backend; this runs at config time, not per request.
            from meshward.ratelimit.redis_backend import RedisBackend

            backend = self.redis[name] = RedisBackend(name)
        return backend


def shared_state(runtime: SidecarRuntime) -> RateLimitShared:
    return runtime.service(RateLimitShared)


class _Pending:
    """Per-request state kept in ``ctx.scratch`` between the hooks."""

    __slots__ = ("admission", "meter", "usage")

    def __init__(self, admission: Admission, meter: UsageMeter | None) -> None:
        self.admission = admission
        self.meter = meter
        self.usage: TokenUsage | None = None


def _facts(ctx: RequestContext) -> RequestFacts:
    peer = ctx.peer
    ai = ctx.ai
    user = ctx.end_user
    if user is None:
        return RequestFacts(
            peer.principal, peer.namespace, ctx.method, ctx.path, ctx.headers, ai.model, ai.operation
        )
    return RequestFacts(
        peer.principal,
        peer.namespace,
        ctx.method,
        ctx.path,
        ctx.headers,
        ai.model,
        ai.operation,
        end_user=user.principal,
        claims=user.claims,
    )


class RateLimitFilter(Filter):
    name = "ratelimit"

    def __init__(self, limiter: RateLimiter, telemetry: RateLimitTelemetry) -> None:
        self.limiter = limiter
        self.telemetry = telemetry
        # Local buckets never wait; a Redis client uses asyncio.timeout(), which needs a Task.
        self.eager_safe = all(name == "local" for name in {lim.backend for lim in limiter.limits})
        self.metering_only = not limiter.limits  # no RateLimitPolicy: meter tokens, limit nothing
        # Limits that need the JSON body: token budgets (the prompt estimate, max_tokens), and
        # limits keyed or matched by model when the path does not name it.
        self._budget_limits = [lim for lim in limiter.limits if "tokens" in lim.dimensions]
        self._body_limits = [
            lim
            for lim in limiter.limits
            if "tokens" in lim.dimensions or lim.key_kind == "model" or lim.models is not None
        ]

    def wants_request_body(self, ctx: RequestContext) -> bool:
        """The JSON body of an OpenAI-style POST: the model, the prompt estimate, max_tokens.

        Needed for token budgets (reserve before the call) and for limits keyed or matched
        by model when the path does not name it.
        """
        ai = ctx.ai
        if ai.protocol != "openai" or ctx.method != "POST":
            return False
        if self.metering_only:  # the model is metered: read it from the body when the path lacks it
            return ai.model is None and ai.operation in _METERED_OPERATIONS
        wanted = self._body_limits if ai.model is None else self._budget_limits
        if not wanted:
            return False
        facts = _facts(ctx)
        return any(limit.applies(facts, model_unknown=True) for limit in wanted)

    async def on_request(self, ctx: RequestContext) -> Denial | None:
        ai = ctx.ai
        if self.metering_only:  # nothing to admit: only meter the AI calls that use tokens
            if ai.operation in _METERED_OPERATIONS:
                ctx.scratch[_SCRATCH] = _Pending(Admission(ctx.request_id), UsageMeter())
            return None
        facts = _facts(ctx)
        adm = await self.limiter.admit(
            facts, ctx.request_id, ai.prompt_tokens_estimate or 0, ai.max_output_tokens
        )
        telemetry = self.telemetry
        for limit in adm.failed_open:
            telemetry.backend_failure(limit.id, "open")
        for shadow in adm.shadow_refusals:
            telemetry.limited(shadow.limit.policy, shadow.limit.name, shadow.dimension, "shadow")
            if shadow.unavailable:
                telemetry.backend_failure(shadow.limit.id, "closed")
            ctx.audit_marks.append(f"ratelimit-shadow:{shadow.limit.policy}/{shadow.limit.name}")
        refusal = adm.refusal
        meter = (
            UsageMeter() if (adm.holds or ai.operation in _METERED_OPERATIONS) and refusal is None else None
        )
        ctx.scratch[_SCRATCH] = _Pending(adm, meter)
        if refusal is None:
            return None
        limit = refusal.limit
        if refusal.unavailable:
            telemetry.backend_failure(limit.id, "closed")
        else:
            telemetry.limited(limit.policy, limit.name, refusal.dimension, "enforce")
        answer = answer_for(refusal)
        return Denial(
            kind="unavailable" if refusal.unavailable else "ratelimit",
            status=answer.status,
            message=answer.message,
            policy=limit.policy,
            rule=limit.name,
            headers=answer.headers,
            body=answer.body,
        )

    def on_response_headers(self, ctx: RequestContext, status: int, headers: list[tuple[str, str]]) -> bool:
        pending = ctx.scratch.get(_SCRATCH)
        if pending is None:
            return False
        if pending.meter is not None:
            pending.meter.start(status, headers)
        tightest = pending.admission.tightest
        if tightest is not None:
            headers.extend(status_headers(*tightest))
        return False

    def on_response_chunk(self, ctx: RequestContext, chunk: bytes) -> bytes:
        pending = ctx.scratch.get(_SCRATCH)
        if pending is not None and pending.meter is not None:
            pending.meter.feed(chunk)
        return chunk

    def on_response_end(self, ctx: RequestContext) -> bytes:
        # ctx.tokens is set here, not in on_complete: filters complete in reverse order, and
        # the later ones (telemetry, audit) read ctx.tokens in their on_complete.
        pending = ctx.scratch.get(_SCRATCH)
        if pending is not None and pending.meter is not None:
            self._measure(ctx, pending, pending.meter)
            # Settle now, before the last bytes reach the caller: a shared store then counts
            # this call before the caller's next one can arrive at another replica.
            self.limiter.settle(pending.admission, pending.usage)
        return b""

    def _measure(self, ctx: RequestContext, pending: _Pending, meter: UsageMeter) -> None:
        if pending.usage is not None:
            return
        meter.finish()
        if meter.started:  # the model answered (no head: it never did, nothing is counted)
            usage = pending.usage = meter.result(ctx.ai.prompt_tokens_estimate)
            ctx.tokens = usage
            self.telemetry.tokens(
                ctx.ai.model, ctx.ai.operation, ctx.peer.principal, usage.input, usage.output, usage.estimated
            )

    def on_complete(self, ctx: RequestContext) -> None:
        pending: _Pending | None = ctx.scratch.pop(_SCRATCH, None)
        if pending is None:
            return
        if pending.meter is not None:  # a stream cut short never reached on_response_end
            self._measure(ctx, pending, pending.meter)
        self.limiter.settle(pending.admission, pending.usage)


def _limits(snapshot: MeshSnapshot) -> list[CompiledLimit]:
    return [limit for policy in compile_policies(snapshot) for limit in policy.limits]


def build(snapshot: MeshSnapshot, runtime: SidecarRuntime) -> Filter | None:
    """The rate-limit filter for this generation. With no RateLimitPolicy it only meters: the
    model, operation and token usage of every AI request are still read and counted."""
    limits = _limits(snapshot)
    state = shared_state(runtime)
    state.telemetry.bind(runtime.metrics_registry)
    backends: dict[str, Any] = {name: state.backend(name) for name in {lim.backend for lim in limits}}
    return RateLimitFilter(RateLimiter(limits, backends), state.telemetry)
