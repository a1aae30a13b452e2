"""Istio's string forms: one matcher, checked against a reference reading of Istio's docs.

The reference (:func:`reference`) is written from the ``AuthorizationPolicy`` documentation
alone: exact ``abc``, prefix ``abc*``, suffix ``*abc``, presence ``*`` (any non-empty value), a
list matching when any pattern does, a missing value matching nothing. The properties check
that every consumer of :mod:`meshward.patterns.strings` agrees with it: the matcher itself, the
authorization engine's generated code, and a rate limit's ``applies``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.authz.attributes import RequestAttributes
from meshward.authz.engine import AuthzEngine
from meshward.patterns.strings import StringMatcher, check_string_pattern, is_exact, pattern_kind
from meshward.ratelimit.compile import RequestFacts, compile_limit
from meshward.resources.authorization import AuthorizationPolicy
from meshward.resources.ratelimit import RateLimit


def reference(patterns: list[str], value: str | None) -> bool:
    """Istio's documented meaning, one pattern at a time."""

    def one(pattern: str, v: str) -> bool:
        if pattern == "*":
            return v != ""
        if pattern.startswith("*"):
            return v.endswith(pattern[1:])
        if pattern.endswith("*"):
            return v.startswith(pattern[:-1])
        return v == pattern

    return value is not None and any(one(p, value) for p in patterns)


# A small alphabet so that prefixes, suffixes and equal values are frequent.
_TEXT = st.text(alphabet="ab.-/", max_size=4)
_PATTERN = st.one_of(
    st.just("*"),
    _TEXT.filter(bool),
    _TEXT.map(lambda t: f"{t}*"),
    _TEXT.map(lambda t: f"*{t}"),
).filter(lambda p: p != "**")
_PATTERNS = st.lists(_PATTERN, min_size=1, max_size=4)
_VALUE = st.one_of(st.none(), _TEXT)


@pytest.mark.parametrize(
    ("patterns", "value", "expected"),
    [
        (["abc"], "abc", True),
        (["abc"], "abcd", False),
        (["abc"], "", False),
        (["abc*"], "abc", True),  # a prefix matches the prefix itself
        (["abc*"], "abcd", True),
        (["abc*"], "xabc", False),
        (["*abc"], "abc", True),  # a suffix matches the suffix itself
        (["*abc"], "xabc", True),
        (["*abc"], "abcx", False),
        (["*"], "x", True),
        (["*"], "", False),  # presence: a non-empty value
        (["*"], None, False),
        (["abc", "x*"], None, False),
        (["a", "b*", "*c"], "bz", True),
        (["a", "b*", "*c"], "zc", True),
        (["a", "b*", "*c"], "a", True),
        (["a", "b*", "*c"], "zz", False),
        ([], "a", False),
    ],
)
def test_matcher_table(patterns: list[str], value: str | None, expected: bool) -> None:
    assert StringMatcher(patterns).matches(value) is expected
    assert reference(patterns, value) is expected


@pytest.mark.parametrize(
    ("pattern", "kind", "text"),
    [
        ("*", "presence", ""),
        ("abc", "exact", "abc"),
        ("abc*", "prefix", "abc"),
        ("*abc", "suffix", "abc"),
        ("*/sa/job", "suffix", "/sa/job"),
    ],
)
def test_pattern_kind(pattern: str, kind: str, text: str) -> None:
    assert pattern_kind(pattern) == (kind, text)
    assert is_exact(pattern) is (kind == "exact")


@pytest.mark.parametrize("pattern", ["", "**", "a*b", "*a*", "a**", "**a", "*a*b"])
def test_validation_refuses(pattern: str) -> None:
    with pytest.raises(ValueError):
        check_string_pattern(pattern)


@pytest.mark.parametrize("pattern", ["*", "a", "a*", "*a", "td/ns/web/*", "*/sa/job"])
def test_validation_accepts(pattern: str) -> None:
    check_string_pattern(pattern)


@given(_PATTERN)
def test_generated_patterns_are_valid(pattern: str) -> None:
    check_string_pattern(pattern)


@settings(max_examples=300)
@given(_PATTERNS, _VALUE)
def test_matcher_agrees_with_the_reference(patterns: list[str], value: str | None) -> None:
    assert StringMatcher(patterns).matches(value) is reference(patterns, value)


def _authz_allows(patterns: list[str], value: str | None, negated: bool) -> bool:
    field = "notModels" if negated else "models"
    policy = AuthorizationPolicy.model_validate(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "p"},
            "spec": {"rules": [{"to": [{"operation": {field: patterns}}]}]},
        }
    )
    attrs = RequestAttributes(method="GET", path="/", model=value)
    return AuthzEngine([policy], trust_domain="td.local").evaluate(attrs).allowed


@settings(max_examples=150, deadline=None)
@given(_PATTERNS, _VALUE)
def test_authz_generated_code_agrees_with_the_reference(patterns: list[str], value: str | None) -> None:
    expected = reference(patterns, value)
    assert _authz_allows(patterns, value, negated=False) is expected
    assert _authz_allows(patterns, value, negated=True) is not expected  # absent satisfies not*


def _limit_applies(patterns: list[str], value: str | None) -> bool:
    spec = RateLimit.model_validate({"name": "l", "concurrency": 1, "match": {"models": patterns}})
    limit = compile_limit("ns/p", "local", spec, "td.local")
    facts: dict[str, Any] = {
        "principal": None,
        "namespace": None,
        "method": "GET",
        "path": "/",
        "headers": {},
        "model": value,
        "operation": "other",
    }
    return limit.applies(RequestFacts(**facts))


@settings(max_examples=150, deadline=None)
@given(_PATTERNS, _VALUE)
def test_rate_limit_matching_agrees_with_the_reference(patterns: list[str], value: str | None) -> None:
    assert _limit_applies(patterns, value) is reference(patterns, value)


@pytest.mark.parametrize("field", ["principals", "namespaces", "models", "paths"])
def test_rate_limit_validation_is_the_authorization_one(field: str) -> None:
    with pytest.raises(ValueError, match="only allowed at the start or the end"):
        RateLimit.model_validate({"name": "l", "concurrency": 1, "match": {field: ["/a*b"]}})
