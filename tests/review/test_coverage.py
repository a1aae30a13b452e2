"""Rule coverage (shadowed policies): tables, and a property against the authz engine itself.

The property: whenever :func:`rule_covers` says rule A covers rule B, every request B matches
is matched by A — checked by compiling each rule alone into the real engine.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.authz.attributes import RequestAttributes
from meshward.authz.engine import AuthzEngine
from meshward.resources.authorization import AuthorizationPolicy, Rule
from meshward.review.coverage import path_covers, pattern_covers, rule_covers

TD = "demo.local"


@pytest.mark.parametrize(
    ("a", "b", "covers"),
    [
        ("*", "abc", True),
        ("*", "*", True),
        ("abc", "*", False),
        ("ab*", "abc", True),
        ("ab*", "abc*", True),
        ("abc*", "ab*", False),
        ("*bc", "abc", True),
        ("*bc", "*abc", True),
        ("*abc", "*bc", False),
        ("ab*", "*bc", False),
        ("abc", "abc", True),
        ("abc", "abd", False),
    ],
)
def test_pattern_covers(a: str, b: str, covers: bool) -> None:
    assert pattern_covers(a, b) is covers


@pytest.mark.parametrize(
    ("a", "b", "covers"),
    [
        ("/v2/models/{*}/infer", "/v2/models/fraud/infer", True),
        ("/v2/models/{*}/infer", "/v2/models/a/b/infer", False),
        ("/v2/{**}", "/v2/models/{*}/infer", True),
        ("/v2/*", "/v2/models/{*}/infer", True),
        ("/v1/*", "/v2/models/{*}/infer", False),
        ("/v2/models/fraud/infer", "/v2/models/{*}/infer", False),
        ("/v2/models/{*}/infer", "/v2/*", False),
        ("/v2/models/{*}/infer", "/v2/models/{*}/infer", True),
    ],
)
def test_path_covers(a: str, b: str, covers: bool) -> None:
    assert path_covers(a, b) is covers


def _rule(doc: dict[str, Any]) -> Rule:
    return Rule.model_validate(doc)


@pytest.mark.parametrize(
    ("a", "b", "covers"),
    [
        ({}, {"from": [{"source": {"principals": ["ml/a"]}}]}, True),
        ({"from": [{"source": {"principals": ["ml/a"]}}]}, {}, False),
        (
            {"from": [{"source": {"principals": ["demo.local/ns/ml/*"]}}]},
            {"from": [{"source": {"principals": ["ml/a"]}}]},
            True,
        ),
        (
            {"from": [{"source": {"namespaces": ["ml"]}}]},
            {"from": [{"source": {"principals": ["ml/a"]}}]},
            False,
        ),
        (
            {"to": [{"operation": {"methods": ["GET", "POST"]}}]},
            {"to": [{"operation": {"methods": ["GET"]}}]},
            True,
        ),
        (
            {"to": [{"operation": {"methods": ["GET"]}}]},
            {"to": [{"operation": {"methods": ["GET", "POST"]}}]},
            False,
        ),
        (
            {"to": [{"operation": {"notPaths": ["/admin"]}}]},
            {"to": [{"operation": {"paths": ["/x"]}}]},
            False,
        ),
        (
            {"to": [{"operation": {"notPaths": ["/admin"]}}]},
            {"to": [{"operation": {"paths": ["/x"], "notPaths": ["/admin"]}}]},
            True,
        ),
        ({"when": [{"key": "request.model", "values": ["m"]}]}, {}, False),
        ({}, {"when": [{"key": "request.model", "values": ["m"]}]}, True),
        (
            {"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}]},
            {"from": [{"source": {"ipBlocks": ["10.1.0.0/16"]}}]},
            True,
        ),
        (
            {"from": [{"source": {"ipBlocks": ["10.1.0.0/16"]}}]},
            {"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}]},
            False,
        ),
    ],
)
def test_rule_covers(a: dict[str, Any], b: dict[str, Any], covers: bool) -> None:
    assert rule_covers(_rule(a), _rule(b), TD) is covers


PRINCIPALS = ["ml/a", "ml/b", "web/c", "demo.local/ns/ml/*", "*/sa/a", "*"]
PATHS = ["/v2/models/m/infer", "/v2/models/{*}/infer", "/v2/*", "/v1/x", "*/infer", "/v2/{**}", "*"]
METHODS = ["GET", "POST"]
MODELS = ["m", "n", "m*"]
OPERATIONS = ["infer", "chat", "metadata"]
CALLERS = ["demo.local/ns/ml/sa/a", "demo.local/ns/ml/sa/b", "demo.local/ns/web/sa/c", None]
REQUEST_PATHS = ["/v2/models/m/infer", "/v2/models/n/infer", "/v1/x", "/v2/repository/x/infer", "/other"]


def _subset(values: list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), max_size=2, unique=True)


rules = st.builds(
    lambda principals, namespaces, methods, paths, not_paths, models, ops: {
        **(
            {
                "from": [
                    {
                        "source": {
                            k: v for k, v in (("principals", principals), ("namespaces", namespaces)) if v
                        }
                    }
                ]
            }
            if principals or namespaces
            else {}
        ),
        **(
            {
                "to": [
                    {
                        "operation": {
                            k: v
                            for k, v in (
                                ("methods", methods),
                                ("paths", paths),
                                ("notPaths", not_paths),
                                ("models", models),
                                ("aiOperations", ops),
                            )
                            if v
                        }
                    }
                ]
            }
            if methods or paths or not_paths or models or ops
            else {}
        ),
    },
    _subset(PRINCIPALS),
    _subset(["ml", "web", "m*"]),
    _subset(METHODS),
    _subset(PATHS),
    _subset(["/v1/x", "/v2/*"]),
    _subset(MODELS),
    _subset(OPERATIONS),
)
requests = st.builds(
    lambda caller, method, path, model, op: RequestAttributes(
        method=method,
        path=path,
        principal=caller,
        namespace=caller.split("/")[2] if caller else None,
        model=model,
        operation=op,
    ),
    st.sampled_from(CALLERS),
    st.sampled_from(METHODS),
    st.sampled_from(REQUEST_PATHS),
    st.sampled_from(["m", "n", "mx", None]),
    st.sampled_from(OPERATIONS),
)


def _engine(rule: dict[str, Any]) -> AuthzEngine:
    doc = {
        "apiVersion": "meshward.dev/v1alpha1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "p"},
        "spec": {"rules": [rule]},
    }
    return AuthzEngine([AuthorizationPolicy.model_validate(doc)], trust_domain=TD)


@settings(max_examples=40, deadline=None)
@given(rules, rules, st.lists(requests, min_size=1, max_size=12))
def test_a_covering_rule_matches_every_request_the_covered_one_does(
    a: dict[str, Any], b: dict[str, Any], sample: list[RequestAttributes]
) -> None:
    if not rule_covers(_rule(a), _rule(b), TD):
        return
    engine_a, engine_b = _engine(a), _engine(b)
    for r in sample:
        if engine_b.evaluate(r).allowed:
            assert engine_a.evaluate(r).allowed, (a, b, r)


@settings(max_examples=30, deadline=None)
@given(rules)
def test_every_rule_covers_itself_and_a_narrower_copy(a: dict[str, Any]) -> None:
    narrower = {**a, "when": [{"key": "request.headers[x-team]", "values": ["fraud"]}]}
    assert rule_covers(_rule(a), _rule(a), TD)
    assert rule_covers(_rule(a), _rule(narrower), TD)
    assert not rule_covers(_rule(narrower), _rule(a), TD)
