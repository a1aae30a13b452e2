"""The rate-limit filter driven hook by hook, as the sidecar drives it (local backend, manual clock).

Transcript style: >> a request, << what the filter answered.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from meshward.config.snapshot import WorkloadInfo
from meshward.filters.base import Denial, Filter, RequestContext, SidecarRuntime
from meshward.filters.ratelimit import RateLimitFilter, RateLimitShared, build, shared_state
from meshward.ratelimit.backend import LocalBackend
from tests.ratelimit.policies import WEBAPP, context, policy
from tests.support.sidecar import make_snapshot


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def runtime(clock: Clock, registry: Any = None) -> SidecarRuntime:
    rt = SidecarRuntime(WorkloadInfo("chat", "llm", "chat", "chat", {"app": "chat"}), "demo.local")
    rt.provide(RateLimitShared(local=LocalBackend(clock)))
    rt.metrics_registry = registry
    return rt


def chain(rt: SidecarRuntime, *limits: dict[str, Any]) -> Filter:
    f = build(make_snapshot("llm/chat", policies=[policy(*limits)]), rt)
    assert f is not None
    return f


def call(
    f: Filter, ctx: RequestContext, usage: dict[str, int] | None = None, status: int = 200
) -> Denial | None:
    """One request through the filter: on_request, then (if admitted) a JSON response, then on_complete."""
    denial = asyncio.run(f.on_request(ctx))
    if denial is None:
        body = {"choices": [{"message": {"content": "hello there"}}]}
        if usage is not None:
            body["usage"] = usage
        raw = json.dumps(body).encode()
        ctx.response_status = status
        f.on_response_headers(ctx, status, [("Content-Type", "application/json")])
        assert f.on_response_chunk(ctx, raw[:7]) == raw[:7]  # passes through untouched
        assert f.on_response_chunk(ctx, raw[7:]) == raw[7:]
        assert f.on_response_end(ctx) == b""
    f.on_complete(ctx)
    return denial


def headers(d: Denial) -> dict[str, str]:
    return dict(d.headers)


def test_no_policy_a_metering_only_filter() -> None:
    f = build(make_snapshot("llm/chat"), runtime(Clock()))
    assert isinstance(f, RateLimitFilter) and f.metering_only and f.eager_safe


def test_token_budget_exhausted_exactly_at_limit_then_429_with_headers() -> None:
    clock = Clock(1_000_040.0)  # 20 s into a minute (1_000_020 is a minute boundary)
    f = chain(
        runtime(clock), {"name": "tokens-per-caller", "key": "source.principal", "tokens": {"limit": 100}}
    )
    for _ in range(4):  # >> 4 calls of 25 tokens each: all admitted
        ctx = context()
        assert call(f, ctx, {"prompt_tokens": 10, "completion_tokens": 15}) is None
        assert (ctx.tokens.input, ctx.tokens.output, ctx.tokens.estimated) == (10, 15, False)
    d = call(f, context())  # << the 5th: 429, budget spent
    assert d is not None and (d.kind, d.status) == ("ratelimit", 429)
    assert headers(d) == {
        "Retry-After": "40",
        "RateLimit-Policy": '"tokens-per-caller";q=100;w=60;qu="tokens"',
        "RateLimit": '"tokens-per-caller";r=0;t=40',
    }
    assert d.body["limit"] == "tokens-per-caller" and d.message == "rate limited"
    assert call(f, context("spiffe://demo.local/ns/web/sa/other")) is None  # per-caller buckets
    clock.now += 40
    assert call(f, context()) is None  # the next minute


def test_prompt_estimate_that_cannot_fit_is_refused_before_the_model() -> None:
    f = chain(runtime(Clock()), {"name": "t", "tokens": {"limit": 100}})
    assert call(f, context(prompt=60, max_output=50)) is not None  # 110 > 100: refused up front
    assert call(f, context(prompt=60, max_output=40), {"prompt_tokens": 55, "completion_tokens": 5}) is None
    d = call(f, context(prompt=30, max_output=20))  # 60 used, 40 left: 50 does not fit
    assert d is not None and d.body["remaining"] == 40
    assert call(f, context(prompt=30, max_output=10), {"prompt_tokens": 30, "completion_tokens": 10}) is None


def test_output_only_budget_counts_output() -> None:
    f = chain(runtime(Clock()), {"name": "t", "tokens": {"limit": 30, "count": "output"}})
    for _ in range(2):
        assert call(f, context(prompt=1000), {"prompt_tokens": 1000, "completion_tokens": 15}) is None
    assert call(f, context(prompt=1000)) is not None


def test_streamed_usage_is_counted_and_missing_usage_is_estimated() -> None:
    f = chain(runtime(Clock()), {"name": "t", "tokens": {"limit": 10_000}})
    ctx = context(prompt=12)
    assert asyncio.run(f.on_request(ctx)) is None
    ctx.response_status = 200
    f.on_response_headers(ctx, 200, [("content-type", "text/event-stream")])
    for piece in (b'data: {"choices":[{"delta":{"content":"abcdefgh"}}]}\n\n', b"data: [DONE]\n\n"):
        f.on_response_chunk(ctx, piece)
    f.on_complete(ctx)
    assert (ctx.tokens.input, ctx.tokens.output, ctx.tokens.estimated) == (12, 2, True)


def test_request_rate_burst_then_recovers_after_retry_after() -> None:
    clock = Clock()
    f = chain(runtime(clock), {"name": "rps", "requests": {"limit": 2, "per": "second", "burst": 3}})
    results = [call(f, context()) for _ in range(4)]
    assert [r is None for r in results] == [True, True, True, False]
    d = results[3]
    assert d is not None and headers(d)["Retry-After"] == "1"
    assert headers(d)["RateLimit-Policy"] == '"rps";q=2;w=1'
    clock.now += int(headers(d)["Retry-After"])
    assert call(f, context()) is None


def test_concurrency_released_on_every_outcome() -> None:
    f = chain(runtime(Clock()), {"name": "c", "concurrency": 1})
    first = context()
    assert asyncio.run(f.on_request(first)) is None
    second = context()
    d = asyncio.run(f.on_request(second))
    assert d is not None and headers(d)["RateLimit-Policy"] == '"c";q=1;qu="concurrent-requests"'
    f.on_complete(second)
    first.response_status = 0  # upstream failed: no response at all
    f.on_complete(first)
    f.on_complete(first)  # a second completion must not free someone else's slot
    for status in (200, 500, 502):
        assert call(f, context(), status=status) is None


def test_refused_request_gives_back_what_it_held() -> None:
    clock = Clock()
    rt = runtime(clock)
    f = chain(
        rt,
        {"name": "c", "concurrency": 1, "tokens": {"limit": 50}},
        {"name": "rps", "requests": {"limit": 1}},
    )
    assert call(f, context(prompt=20)) is None
    d = call(f, context(prompt=20))  # concurrency + tokens admitted, then the rate refuses
    assert d is not None and d.rule == "rps"
    clock.now += 1
    # The slot and the 20-token reservation of the refused request came back.
    assert call(f, context(prompt=20), {"prompt_tokens": 20, "completion_tokens": 0}) is None


def test_shadow_counts_but_never_blocks() -> None:
    registry = CollectorRegistry()
    rt = runtime(Clock(), registry)
    f = chain(rt, {"name": "dry", "requests": {"limit": 1}, "mode": "shadow"})
    ctxs = [context() for _ in range(5)]
    assert all(call(f, c) is None for c in ctxs)
    assert "ratelimit-shadow:llm/budget/dry" in ctxs[-1].audit_marks
    value = registry.get_sample_value(
        "meshward_ratelimit_limited_total",
        {"policy": "llm/budget", "limit": "dry", "dimension": "requests", "mode": "shadow"},
    )
    assert value == 4


def test_token_usage_histogram_follows_genai_conventions() -> None:
    registry = CollectorRegistry()
    f = chain(runtime(Clock(), registry), {"name": "t", "tokens": {"limit": 1000}})
    call(f, context(), {"prompt_tokens": 10, "completion_tokens": 15})
    labels = {
        "gen_ai_request_model": "gpt-test",
        "gen_ai_operation_name": "chat",
        "source_principal": WEBAPP[9:],
        "estimated": "false",
    }
    assert (
        registry.get_sample_value("gen_ai_client_token_usage_sum", {**labels, "gen_ai_token_type": "input"})
        == 10
    )
    assert (
        registry.get_sample_value("gen_ai_client_token_usage_sum", {**labels, "gen_ai_token_type": "output"})
        == 15
    )


def test_state_survives_a_config_swap() -> None:
    clock = Clock()
    rt = runtime(clock)
    limit = {"name": "t", "key": "source.principal", "tokens": {"limit": 30}}
    f1 = chain(rt, limit)
    assert call(f1, context(), {"prompt_tokens": 20, "completion_tokens": 10}) is None
    f2 = chain(rt, {**limit, "tokens": {"limit": 40}})  # new generation, higher budget
    assert call(f2, context(prompt=5), {"prompt_tokens": 5, "completion_tokens": 5}) is None
    assert call(f2, context()) is not None  # 40 used across both generations


@pytest.mark.parametrize("limit_first", [True, False])
def test_match_skips_other_traffic(limit_first: bool) -> None:
    f = chain(
        runtime(Clock()), {"name": "emb", "match": {"aiOperations": ["embed"]}, "requests": {"limit": 1}}
    )
    for _ in range(3):
        assert call(f, context(operation="chat")) is None
    assert call(f, context(operation="embed")) is None
    assert call(f, context(operation="embed")) is not None


def test_tokens_are_known_before_any_filter_completes() -> None:
    """Filters complete in reverse order: ctx.tokens must be set when the body ends."""
    f = chain(runtime(Clock()), {"name": "t", "tokens": {"limit": 1000}})
    ctx = context()
    assert asyncio.run(f.on_request(ctx)) is None
    ctx.response_status = 200
    f.on_response_headers(ctx, 200, [("content-type", "application/json")])
    f.on_response_chunk(ctx, b'{"usage": {"prompt_tokens": 3, "completion_tokens": 4}}')
    f.on_response_end(ctx)
    assert (ctx.tokens.input, ctx.tokens.output) == (3, 4)
    f.on_complete(ctx)
    assert (ctx.tokens.input, ctx.tokens.output) == (3, 4)


def test_admitted_responses_advertise_the_tightest_enforced_limit() -> None:
    clock = Clock(1_000_040.0)
    f = chain(
        runtime(clock),
        {"name": "rps", "requests": {"limit": 10, "per": "second"}},  # 9 of 10 left: 90 %
        {"name": "t", "tokens": {"limit": 100}},  # 70 of 100 left after the estimate: 70 %
        {"name": "dry", "requests": {"limit": 1}, "mode": "shadow"},  # shadow: never advertised
    )
    ctx = context(prompt=30)
    assert asyncio.run(f.on_request(ctx)) is None
    response_headers = [("content-type", "application/json")]
    f.on_response_headers(ctx, 200, response_headers)
    assert response_headers[1:] == [
        ("RateLimit-Policy", '"t";q=100;w=60;qu="tokens"'),
        ("RateLimit", '"t";r=70;t=40'),
    ]
    f.on_complete(ctx)


def test_removed_limit_forgets_its_state_and_in_flight_requests_settle_safely() -> None:
    rt = runtime(Clock())
    f1 = chain(rt, {"name": "t", "tokens": {"limit": 100}}, {"name": "c", "concurrency": 1})
    ctx = context()
    assert asyncio.run(f1.on_request(ctx)) is None
    chain(rt, {"name": "other", "requests": {"limit": 5}})  # new generation without t and c
    local = shared_state(rt).local
    assert (
        set(local.windows) == set()
        and set(local.gates) == set()
        and set(local.buckets) == {"llm/budget/other"}
    )
    ctx.response_status = 200
    f1.on_complete(ctx)  # the old generation's request completes: no error, nothing leaks


def test_model_label_values_are_bounded() -> None:
    registry = CollectorRegistry()
    rt = runtime(Clock(), registry)
    shared_state(rt).telemetry.max_label_values = 3
    f = chain(rt, {"name": "t", "tokens": {"limit": 10_000_000}})
    for i in range(10):
        call(f, context(model=f"attacker-{i}"), {"prompt_tokens": 1, "completion_tokens": 1})
    models = {
        s.labels["gen_ai_request_model"]
        for m in registry.collect()
        if m.name == "gen_ai_client_token_usage"
        for s in m.samples
    }
    assert models == {"attacker-0", "attacker-1", "attacker-2", "other"}


def test_refusal_fields_name_the_same_moment_as_retry_after() -> None:
    f = chain(runtime(Clock()), {"name": "rps", "requests": {"limit": 1, "per": "second", "burst": 5}})
    results = [call(f, context()) for _ in range(6)]
    d = results[-1]
    assert d is not None and headers(d)["RateLimit"] == '"rps";r=0;t=1' and headers(d)["Retry-After"] == "1"


def test_stream_cut_short_is_still_counted() -> None:
    f = chain(runtime(Clock()), {"name": "t", "tokens": {"limit": 10}}, {"name": "c", "concurrency": 1})
    ctx = context(prompt=2)
    assert asyncio.run(f.on_request(ctx)) is None
    ctx.response_status = 200
    f.on_response_headers(ctx, 200, [("content-type", "text/event-stream")])
    f.on_response_chunk(ctx, b'data: {"choices":[{"delta":{"content":"' + b"x" * 32 + b'"}}]}\n\n')
    f.on_complete(ctx)  # the caller went away: no on_response_end
    assert (ctx.tokens.input, ctx.tokens.output, ctx.tokens.estimated) == (2, 8, True)
    d = call(f, context(prompt=1))  # 2 + 8 = 10 of 10 used: refused
    assert d is not None and d.rule == "t"


def test_upstream_failure_before_any_answer_counts_nothing() -> None:
    f = chain(runtime(Clock()), {"name": "t", "tokens": {"limit": 100}})
    ctx = context(prompt=60)
    assert asyncio.run(f.on_request(ctx)) is None
    ctx.response_status = 503  # the sidecar's own answer: the model was unreachable
    f.on_complete(ctx)
    assert ctx.tokens.total == 0
    assert (
        call(f, context(prompt=100), {"prompt_tokens": 100, "completion_tokens": 0}) is None
    )  # all refunded


@pytest.mark.parametrize(
    ("limit", "ctx_kw", "wanted"),
    [
        ({"name": "t", "tokens": {"limit": 10}}, {}, True),
        ({"name": "t", "tokens": {"limit": 10}}, {"method": "GET"}, False),
        ({"name": "t", "match": {"principals": ["web/other"]}, "tokens": {"limit": 10}}, {}, False),
        ({"name": "t", "match": {"models": ["x"]}, "tokens": {"limit": 10}}, {"model": None}, True),
        ({"name": "r", "requests": {"limit": 10}}, {"model": None}, False),
        ({"name": "r", "key": "request.model", "requests": {"limit": 10}}, {"model": None}, True),
        ({"name": "r", "key": "request.model", "requests": {"limit": 10}}, {"model": "m"}, False),
    ],
)
def test_request_body_is_buffered_only_when_a_limit_needs_it(
    limit: dict[str, Any], ctx_kw: dict[str, Any], wanted: bool
) -> None:
    f = chain(runtime(Clock()), limit)
    assert f.wants_request_body(context(**ctx_kw)) is wanted
