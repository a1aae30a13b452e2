"""RateLimitPolicy validation: the documented shape loads, typos and nonsense are refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from meshward.resources.ratelimit import RateLimitPolicy


def doc(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "meshward.dev/v1alpha1",
        "kind": "RateLimitPolicy",
        "metadata": {"name": "webapp-budget", "namespace": "llm"},
        "spec": spec,
    }


DESIGN_EXAMPLE = doc(
    selector={"matchLabels": {"app": "chat"}},
    backend="local",
    limits=[
        {
            "name": "tokens-per-caller",
            "match": {"principals": ["demo.local/ns/web/sa/webapp"], "aiOperations": ["chat"]},
            "key": "source.principal",
            "tokens": {"limit": 20000, "per": "minute", "count": "total"},
            "requests": {"limit": 10, "per": "second", "burst": 20},
            "concurrency": 4,
            "mode": "enforce",
            "failureMode": "closed",
        }
    ],
)


def test_design_example_loads() -> None:
    p = RateLimitPolicy.model_validate(DESIGN_EXAMPLE)
    lim = p.spec.limits[0]
    assert lim.tokens is not None and lim.tokens.limit == 20000
    assert lim.effective_failure_mode == "closed"
    assert RateLimitPolicy.model_validate(p.to_doc()) == p


@pytest.mark.parametrize(
    ("limit", "mode"),
    [
        ({"name": "a", "requests": {"limit": 1}}, "open"),
        ({"name": "a", "tokens": {"limit": 1}}, "closed"),
        ({"name": "a", "concurrency": 1}, "closed"),
        ({"name": "a", "requests": {"limit": 1}, "failureMode": "closed"}, "closed"),
        ({"name": "a", "tokens": {"limit": 1}, "failureMode": "open"}, "open"),
    ],
)
def test_failure_mode_defaults(limit: dict[str, Any], mode: str) -> None:
    assert RateLimitPolicy.model_validate(doc(limits=[limit])).spec.limits[0].effective_failure_mode == mode


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ({"limits": []}, "at least 1"),
        ({"limits": [{"name": "a"}]}, "bounds nothing"),
        ({"limits": [{"name": "a", "requests": {"limit": 0}}]}, "greater than or equal to 1"),
        ({"limits": [{"name": "a", "requests": {"limit": 1, "per": "fortnight"}}]}, "per"),
        ({"limits": [{"name": "a", "key": "source.ip", "concurrency": 1}]}, "key"),
        ({"limits": [{"name": "a", "key": "request.headers[]", "concurrency": 1}]}, "key"),
        ({"limits": [{"name": "a", "concurrency": 1, "mode": "dry"}]}, "mode"),
        ({"limits": [{"name": "a", "concurrency": 1, "match": {"aiOperations": ["chatt"]}}]}, "chatt"),
        ({"limits": [{"name": "a", "concurrency": 1, "match": {"paths": ["v1/x"]}}]}, "must start"),
        ({"limits": [{"name": "a", "concurrency": 1, "burst": 3}]}, "burst"),
        ({"limits": [{"name": "a", "concurrency": 1}, {"name": "a", "concurrency": 2}]}, "unique"),
        ({"backend": "memcached://x", "limits": [{"name": "a", "concurrency": 1}]}, "backend"),
        ({"limits": [{"name": "a", "tokens": {"limit": 5, "count": "both"}}]}, "count"),
        ({"limits": [{"name": "a", "concurrency": 1, "match": {"principals": ["web"]}}]}, "expected"),
        (
            {"limits": [{"name": "a", "concurrency": 1, "match": {"principals": ["spiffe://x/y"]}}]},
            "expected",
        ),
    ],
)
def test_invalid_specs_are_refused(spec: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError) as info:
        RateLimitPolicy.model_validate(doc(**spec))
    assert complaint in str(info.value)


@pytest.mark.parametrize(
    "key",
    ["", "source.principal", "request.model", "request.headers[x-api-key]", "request.headers[X-Tenant]"],
)
def test_valid_keys(key: str) -> None:
    policy = RateLimitPolicy.model_validate(doc(limits=[{"name": "a", "key": key, "concurrency": 1}]))
    assert policy.spec.limits[0].key == key


def test_redis_backend_accepted() -> None:
    p = RateLimitPolicy.model_validate(
        doc(backend="redis://127.0.0.1:6379/0", limits=[{"name": "a", "concurrency": 1}])
    )
    assert p.spec.backend.startswith("redis://")
