"""Masking keeps JSON valid: random documents with injected PII stay valid and keep their shape."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.dlp.body import inspect_body, walk_strings
from meshward.dlp.redact import Outcome
from tests.dlp.helpers import plans, policy, redactor

PII = [
    "4111 1111 1111 1111",
    "jane.doe@example.com",
    "+44 20 7946 0958",
    "DE89 3704 0044 0532 0130 00",
    "234-56-7890",
    "AKIAIOSFODNN7EXAMPLE",
    "10.1.2.3",
]
PLAN = plans(policy(action="mask"))["request"]
REDACTOR = redactor()

pii_text = st.builds(
    lambda a, v, b: f"{a} ({v}) {b}",  # delimited: "4111 1111 1111 1111 0" is another number
    st.text(max_size=20),
    st.sampled_from(PII),
    st.text(max_size=20),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    pii_text,
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)


def shape(node: Any) -> Any:
    """Everything but string values (keys, numbers, nesting) — what masking must not change."""
    if isinstance(node, dict):
        return {k: shape(v) for k, v in node.items()}
    if isinstance(node, list):
        return [shape(v) for v in node]
    return "<str>" if isinstance(node, str) else node


def strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


@settings(max_examples=200, deadline=None)
@given(documents, st.booleans())
def test_masked_json_stays_valid_json_with_the_same_shape(doc: Any, ascii_only: bool) -> None:
    body = json.dumps(doc, ensure_ascii=ascii_only).encode()
    out = inspect_body(PLAN, REDACTOR, body, "application/json", None, Outcome())
    masked = json.loads(out)  # raises if masking broke the document
    assert shape(masked) == shape(doc)
    for value in strings(masked):
        for pii in PII:
            assert f"({pii})" not in value  # every injected (delimited) value is masked


@settings(max_examples=50, deadline=None)
@given(st.lists(pii_text, min_size=1, max_size=4))
def test_openai_messages_are_masked_in_place(contents: list[str]) -> None:
    doc = {"model": "m", "messages": [{"role": "user", "content": c} for c in contents]}
    out = json.loads(
        inspect_body(PLAN, REDACTOR, json.dumps(doc).encode(), "application/json", None, Outcome())
    )
    assert out["model"] == "m" and [m["role"] for m in out["messages"]] == ["user"] * len(contents)
    assert all("****" in m["content"] for m in out["messages"])


@settings(max_examples=200, deadline=None)
@given(documents, st.booleans(), st.booleans())
def test_in_place_rewrite_equals_rewriting_the_parsed_document(
    doc: Any, ascii_only: bool, pretty: bool
) -> None:
    """Bodies without escapes are rewritten in place; the result must be what rewriting every
    string of the parsed document gives (the reference path, used for bodies with escapes)."""
    body = json.dumps(doc, ensure_ascii=ascii_only, indent=2 if pretty else None).encode()
    out = inspect_body(PLAN, REDACTOR, body, "application/json", None, Outcome())
    reference, _ = walk_strings(PLAN, REDACTOR, json.loads(body), Outcome())
    assert json.loads(out) == reference
