"""Rate limits through the mesh, end to end, with the real ``openai`` SDK.

client (openai SDK, HTTP proxy) → client sidecar ─mTLS─▶ server sidecar (rate-limit filter)
→ the OpenAI-compatible example model (``examples.models.chat``, reports usage).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import redis as redis_client
from prometheus_client.parser import text_string_to_metric_families

from tests.ratelimit.conftest import RedisServer
from tests.ratelimit.policies import policy
from tests.support.models import example_model
from tests.support.proc import wait_for
from tests.support.sidecar import MeshPair, mesh_pair

pytestmark = [pytest.mark.e2e]

MESSAGES: list[Any] = [{"role": "user", "content": "Tell me about the mesh"}]
TOKENS_LIMIT = "tokens-per-caller"


@pytest.fixture(scope="module")
def chat_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with example_model(tmp_path_factory.mktemp("chat"), "examples.models.chat", "--test-hooks") as port:
        yield port


def client(base: str, proxy: str | None = None) -> openai.OpenAI:
    http = httpx.Client(proxy=proxy, timeout=30) if proxy else httpx.Client(timeout=30)
    return openai.OpenAI(base_url=f"{base}/v1", api_key="test-key", http_client=http, max_retries=0)


def chat(c: openai.OpenAI, stream: bool, model: str = "chat-small") -> int:
    """One chat call; returns the total tokens the model reported."""
    if not stream:
        done = c.chat.completions.create(model=model, messages=MESSAGES)
        assert done.usage is not None
        return done.usage.total_tokens
    total = None
    for chunk in c.chat.completions.create(
        model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ):
        if chunk.usage is not None:
            total = chunk.usage.total_tokens
    assert total is not None
    return total


def seconds_to_utc_midnight() -> float:
    now = dt.datetime.now(dt.UTC)
    midnight = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


def budget_policy(limit: int, backend: str = "local") -> dict[str, Any]:
    # A per-day window: the test cannot straddle a window boundary by bad luck (bar midnight).
    return policy(
        {
            "name": TOKENS_LIMIT,
            "match": {"principals": ["web/webapp"], "aiOperations": ["chat"]},
            "key": "source.principal",
            "tokens": {"limit": limit, "per": "day", "count": "total"},
        },
        backend=backend,
    )


def metric(pair: MeshPair, name: str, **labels: str) -> float:
    text = httpx.get(f"{pair.server.admin_url}/stats/prometheus", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def assert_budget_refusal(exc: openai.RateLimitError, limit: int, name: str = TOKENS_LIMIT) -> None:
    response = exc.response
    assert response.status_code == 429
    headers = response.headers
    assert headers["ratelimit-policy"] == f'"{name}";q={limit};w=86400;qu="tokens"'
    m = re.fullmatch(rf'"{name}";r=0;t=(\d+)', headers["ratelimit"])
    assert m is not None, headers["ratelimit"]
    assert headers["retry-after"] == m.group(1)  # both name the end of the window
    assert abs(int(m.group(1)) - seconds_to_utc_midnight()) <= 5
    body = response.json()
    assert body["error"]["code"] == "rate_limit_exceeded" and body["error"]["type"] == "rate_limit_error"
    assert body["limit"] == name and body["dimension"] == "tokens"
    assert f"limit {name}" in str(exc) and "retry after" in str(exc)  # what the SDK shows says why


def local_policy(costs: dict[str, int]) -> dict[str, Any]:
    """The local-backend limits; each test has its own limits, told apart by ``match``."""
    return policy(
        *(
            {
                "name": f"{TOKENS_LIMIT}-{kind}",
                "match": {
                    "principals": ["web/webapp"],
                    "aiOperations": ["chat"],
                    "models": [f"budget-{kind}"],
                },
                "key": "source.principal",
                "tokens": {"limit": 3 * costs[kind], "per": "day", "count": "total"},
            }
            for kind in ("json", "sse")
        ),
        {
            "name": "rps",
            "match": {"paths": ["/v1/models"]},
            "key": "source.principal",
            "requests": {"limit": 1, "per": "second", "burst": 3},
        },
        {
            "name": "dry-run",
            "match": {"models": ["shadow"]},
            "requests": {"limit": 1, "per": "minute"},
            "mode": "shadow",
        },
        {"name": "one-at-a-time", "match": {"models": ["slow"]}, "key": "source.principal", "concurrency": 1},
    )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_token_budget_exhausted_exactly_at_its_limit(
    local_pair: tuple[MeshPair, dict[str, int]], stream: bool
) -> None:
    pair, costs = local_pair
    kind = "sse" if stream else "json"
    cost, limit, name = costs[kind], 3 * costs[kind], f"{TOKENS_LIMIT}-{kind}"
    model = f"budget-{kind}"
    c = client(pair.service_url, pair.proxy_url)
    assert [chat(c, stream, model) for _ in range(3)] == [cost] * 3  # the same call costs the same
    with pytest.raises(openai.RateLimitError) as info:
        chat(c, stream, model)
    assert_budget_refusal(info.value, limit, name)
    assert metric(pair, "meshward_ratelimit_limited_total", limit=name, mode="enforce") == 1
    used = sum(
        metric(
            pair,
            "gen_ai_client_token_usage_sum",
            gen_ai_token_type=t,
            gen_ai_request_model=model,
            estimated="false",
        )
        for t in ("input", "output")
    )
    assert used == limit


@dataclass
class Mesh:
    a: MeshPair  # client → server sidecar A → the model
    b: MeshPair  # another client → server sidecar B (a replica) → the same model
    redis: RedisServer  # where the shared limits live
    costs: dict[str, int]  # tokens one call costs, by test


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, chat_app: int) -> Iterator[Mesh]:
    """Two server sidecars with the same policies: local limits, and limits shared in Redis."""
    direct = client(f"http://127.0.0.1:{chat_app}")
    costs = {
        "json": chat(direct, False, "budget-json"),
        "sse": chat(direct, True, "budget-sse"),
        "shared": chat(direct, False, "shared"),
    }
    server = RedisServer(tmp_path_factory.mktemp("redis-e2e"))
    server.start()
    shared = policy(
        {
            "name": "shared-budget",
            "match": {"models": ["shared"]},
            "key": "source.principal",
            "tokens": {"limit": 2 * costs["shared"], "per": "day"},
        },
        {"name": "closed-budget", "match": {"models": ["closed-*"]}, "tokens": {"limit": 100_000}},
        {"name": "open-rate", "match": {"models": ["open-*"]}, "requests": {"limit": 100}},
        backend=server.url,
        name="shared",
    )
    docs = [local_policy(costs), shared]
    try:
        with (
            mesh_pair(tmp_path_factory.mktemp("pair-a"), chat_app, docs, default_policy="allow") as a,
            mesh_pair(tmp_path_factory.mktemp("pair-b"), chat_app, docs, default_policy="allow") as b,
        ):
            yield Mesh(a, b, server, costs)
    finally:
        server.stop()


@pytest.fixture
def local_pair(mesh: Mesh) -> tuple[MeshPair, dict[str, int]]:
    return mesh.a, mesh.costs


@pytest.fixture
def redis_pairs(mesh: Mesh) -> tuple[MeshPair, MeshPair, RedisServer, int]:
    return mesh.a, mesh.b, mesh.redis, mesh.costs["shared"]


def test_two_server_sidecars_sharing_redis_enforce_one_budget(
    redis_pairs: tuple[MeshPair, MeshPair, RedisServer, int],
) -> None:
    a, b, redis, cost = redis_pairs
    ca, cb = client(a.service_url, a.proxy_url), client(b.service_url, b.proxy_url)
    store = redis_client.Redis.from_url(redis.url)
    key = "meshward:rl:llm/shared/shared-budget:tok:demo.local/ns/web/sa/webapp"

    def used() -> int:
        return int(store.hget(key, "used") or 0)

    # A replica books the real usage one Redis write after the response (the reservation made
    # before the call holds only the prompt estimate): wait for it, bounded, between calls.
    assert chat(ca, False, "shared") == cost
    wait_for(lambda: used() == cost, timeout=10, what="replica A's usage in Redis")
    assert chat(cb, False, "shared") == cost
    wait_for(lambda: used() == 2 * cost, timeout=10, what="replica B's usage in Redis")
    for c in (ca, cb):
        with pytest.raises(openai.RateLimitError) as info:
            chat(c, False, "shared")
        assert_budget_refusal(info.value, 2 * cost, "shared-budget")


def test_redis_outage_fails_open_or_closed_as_configured(
    redis_pairs: tuple[MeshPair, MeshPair, RedisServer, int],
) -> None:
    pair, _, redis, _ = redis_pairs
    c = client(pair.service_url, pair.proxy_url)
    assert chat(c, False, model="closed-a") > 0
    assert chat(c, False, model="open-a") > 0
    redis.stop()
    try:
        assert chat(c, False, model="open-a") > 0  # request rates fail open
        with pytest.raises(openai.InternalServerError) as info:
            chat(c, False, model="closed-a")  # token budgets fail closed
        response = info.value.response
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert (
            response.json()["limit"] == "closed-budget" and response.json()["reason"] == "backend_unavailable"
        )
        assert metric(pair, "meshward_ratelimit_backend_failures_total", failure_mode="open") >= 1
        assert metric(pair, "meshward_ratelimit_backend_failures_total", failure_mode="closed") >= 1
    finally:
        redis.start()
    deadline = time.monotonic() + 15  # back: the budget works again once the store answers
    while True:
        try:
            assert chat(c, False, model="closed-a") > 0
            break
        except openai.InternalServerError:
            assert time.monotonic() < deadline, "the limit never recovered after Redis came back"
            time.sleep(0.2)


def test_burst_over_the_request_rate_is_refused_then_recovers_after_retry_after(
    local_pair: tuple[MeshPair, dict[str, int]],
) -> None:
    pair, _ = local_pair
    c = client(pair.service_url, pair.proxy_url)
    first = c.models.with_raw_response.list()  # admitted responses advertise the limit too
    assert first.headers["ratelimit-policy"] == '"rps";q=1;w=1'
    assert first.headers["ratelimit"] == '"rps";r=2;t=1'
    statuses = [200]
    refusal: httpx.Response | None = None
    for _ in range(10):
        try:
            c.models.list()
            statuses.append(200)
        except openai.RateLimitError as exc:
            statuses.append(429)
            refusal = exc.response
            break
    assert statuses[:3] == [200, 200, 200]  # the burst
    assert refusal is not None, f"no 429 in a burst of 10: {statuses}"
    assert refusal.headers["ratelimit-policy"] == '"rps";q=1;w=1'
    assert re.fullmatch(r'"rps";r=0;t=\d+', refusal.headers["ratelimit"])
    assert refusal.json()["limit"] == "rps" and refusal.json()["dimension"] == "requests"
    retry_after = int(refusal.headers["retry-after"])
    assert retry_after == 1
    time.sleep(retry_after)  # what a well-behaved client does: the behaviour under test
    assert len(c.models.list().data) >= 1


def test_shadow_mode_never_blocks_but_counts(local_pair: tuple[MeshPair, dict[str, int]]) -> None:
    pair, _ = local_pair
    c = client(pair.service_url, pair.proxy_url)
    for _ in range(5):
        chat(c, False, model="shadow")
    assert metric(pair, "meshward_ratelimit_limited_total", limit="dry-run", mode="shadow") == 4
    assert metric(pair, "meshward_ratelimit_limited_total", limit="dry-run", mode="enforce") == 0


def test_concurrency_slot_comes_back_when_the_caller_aborts_a_stream(
    local_pair: tuple[MeshPair, dict[str, int]],
) -> None:
    pair, _ = local_pair
    c = client(pair.service_url, pair.proxy_url)
    stream = c.chat.completions.create(
        model="slow", messages=MESSAGES, stream=True, extra_headers={"X-Test-Delay-Ms": "300"}
    )
    next(iter(stream))  # the stream is flowing: its slot is held
    with pytest.raises(openai.RateLimitError) as info:
        chat(c, False, model="slow")
    assert info.value.response.headers["ratelimit-policy"] == '"one-at-a-time";q=1;qu="concurrent-requests"'
    stream.close()  # the caller goes away mid-stream
    deadline = time.monotonic() + 15
    while True:  # the sidecar notices the abort and gives the slot back
        try:
            assert chat(c, False, model="slow") > 0
            break
        except openai.RateLimitError:
            assert time.monotonic() < deadline, "the concurrency slot of an aborted stream never came back"
            time.sleep(0.1)
