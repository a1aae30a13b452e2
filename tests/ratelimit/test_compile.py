"""Compiling policies: selection by namespace and labels, matching and keys (tables)."""

from __future__ import annotations

from typing import Any

import pytest

from meshward.patterns.strings import StringMatcher
from meshward.ratelimit.compile import RequestFacts, compile_policies
from tests.ratelimit.policies import policy
from tests.support.sidecar import make_snapshot


def facts(**kw: Any) -> RequestFacts:
    base: dict[str, Any] = {
        "principal": "demo.local/ns/web/sa/webapp",
        "namespace": "web",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": {"x-tenant": "acme"},
        "model": "gpt-4o",
        "operation": "chat",
    }
    base.update(kw)
    return RequestFacts(**base)


def one_limit(**limit: Any) -> Any:
    snap = make_snapshot("llm/chat", policies=[policy({"name": "l", "concurrency": 1, **limit})])
    (compiled,) = compile_policies(snap)
    return compiled.limits[0]


@pytest.mark.parametrize(
    ("patterns", "value", "hit"),
    [
        (["*"], "x", True),
        (["*"], None, False),
        (["a"], "a", True),
        (["a"], "ab", False),
        (["gpt-*"], "gpt-4o", True),
        (["*-mini"], "gpt-4o-mini", True),
        (["*-mini"], "gpt-4o", False),
    ],
)
def test_pattern(patterns: list[str], value: str | None, hit: bool) -> None:
    assert StringMatcher(patterns).matches(value) is hit


@pytest.mark.parametrize(
    ("match", "request_facts", "applies"),
    [
        ({}, {}, True),
        ({"principals": ["web/webapp"]}, {}, True),
        ({"principals": ["spiffe://demo.local/ns/web/sa/webapp"]}, {}, True),
        ({"principals": ["demo.local/ns/web/sa/webapp"]}, {}, True),
        ({"principals": ["web/other"]}, {}, False),
        ({"principals": ["demo.local/ns/web/*"]}, {}, True),
        ({"principals": ["web/*"]}, {}, True),
        ({"principals": ["web/web*"]}, {}, True),
        ({"principals": ["*/webapp"]}, {}, True),
        ({"principals": ["ops/*"]}, {}, False),
        ({"principals": ["*/other"]}, {}, False),
        ({"principals": ["web/webapp"]}, {"principal": None}, False),
        ({"namespaces": ["web"]}, {}, True),
        ({"namespaces": ["ops"]}, {}, False),
        ({"models": ["gpt-*"]}, {}, True),
        ({"models": ["llama*"]}, {}, False),
        ({"models": ["gpt-4o"]}, {"model": None}, False),
        ({"aiOperations": ["chat", "completion"]}, {}, True),
        ({"aiOperations": ["embed"]}, {}, False),
        ({"paths": ["/v1/*"]}, {}, True),
        ({"paths": ["/v2/*"]}, {}, False),
        ({"methods": ["post"]}, {}, True),
        ({"methods": ["GET"]}, {}, False),
        ({"models": ["gpt-*"], "methods": ["GET"]}, {}, False),
    ],
)
def test_match(match: dict[str, Any], request_facts: dict[str, Any], applies: bool) -> None:
    assert one_limit(match=match).applies(facts(**request_facts)) is applies


@pytest.mark.parametrize(
    ("key", "request_facts", "bucket"),
    [
        ("", {}, ""),
        ("source.principal", {}, "demo.local/ns/web/sa/webapp"),
        ("source.principal", {"principal": None}, "-"),
        ("request.model", {}, "gpt-4o"),
        ("request.headers[X-Tenant]", {}, "acme"),
        ("request.headers[x-missing]", {}, "-"),
    ],
)
def test_keys(key: str, request_facts: dict[str, Any], bucket: str) -> None:
    assert one_limit(key=key).key_of(facts(**request_facts)) == bucket


def test_selection_by_namespace_and_labels() -> None:
    policies = [
        policy({"name": "a", "concurrency": 1}, name="mine"),
        policy({"name": "b", "concurrency": 1}, name="other-app", app="fraud"),
        {
            **policy({"name": "c", "concurrency": 1}, name="elsewhere"),
            "metadata": {"name": "x", "namespace": "ops"},
        },
        {
            **policy({"name": "d", "concurrency": 1}, name="root"),
            "metadata": {"name": "mesh-wide", "namespace": "meshward-system"},
        },
    ]
    snap = make_snapshot("llm/chat", policies=policies)
    assert sorted(p.ref for p in compile_policies(snap)) == ["llm/mine", "meshward-system/mesh-wide"]


def test_numbers_compiled() -> None:
    lim = one_limit(
        requests={"limit": 120, "per": "minute", "burst": 30}, tokens={"limit": 500, "per": "hour"}
    )
    assert lim.rate == pytest.approx(2.0) and lim.burst == 30
    assert (lim.token_limit, lim.token_period, lim.token_count) == (500, 3600, "total")
    assert lim.dimensions == ("concurrency", "requests", "tokens")
    assert lim.policy_item("requests") == '"l";q=120;w=60'
    assert lim.policy_item("tokens") == '"l";q=500;w=3600;qu="tokens"'
    assert lim.policy_item("concurrency") == '"l";q=1;qu="concurrent-requests"'
