"""Actions, policy combination, allow-lists and the resource model."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from meshward.dlp.body import Uninspectable, count_records, inspect_body
from meshward.dlp.redact import Outcome, Redactor, inspect_text
from tests.dlp.helpers import plans, policy, redactor

TEXT = b"card 4111 1111 1111 1111, mail jane@example.com, ssn 234-56-7890, iban DE89370400440532013000"


def rewrite(text: bytes, *pols: object, direction: str = "request") -> tuple[bytes, Outcome]:
    plan = plans(*pols)[direction]  # type: ignore[arg-type,index]
    outcome = Outcome()
    return inspect_text(plan, redactor(), text, outcome), outcome


def test_mask_keeps_a_type_tag_and_the_last_four() -> None:
    out, outcome = rewrite(TEXT, policy(action="mask"))
    assert out == (
        b"card [CARD ****1111], mail [EMAIL ****], ssn [NATIONAL_ID ****7890], iban [IBAN ****3000]"
    )
    assert outcome.counts == {"credit_card": 1, "email": 1, "national_id": 1, "iban": 1}


def test_redact_names_the_detector_only() -> None:
    out, _ = rewrite(b"mail jane@example.com", policy(action="redact"))
    assert out == b"mail [REDACTED:email]"


def test_hash_is_stable_keyed_and_ignores_formatting() -> None:
    a, _ = rewrite(b"4111 1111 1111 1111", policy(action="hash"))
    b, _ = rewrite(b"4111-1111-1111-1111", policy(action="hash"))
    assert a == b and a.startswith(b"[HASH:credit_card:") and len(a) == len(b"[HASH:credit_card:]") + 12
    plan = plans(policy(action="hash"))["request"]
    other = inspect_text(plan, Redactor(b"z" * 32), b"4111 1111 1111 1111", Outcome())
    assert other != a  # another sidecar key, another tag
    with pytest.raises(ValueError):
        Redactor(b"short")


def test_log_counts_without_rewriting() -> None:
    out, outcome = rewrite(TEXT, policy(action="log"))
    assert out is TEXT and outcome.counts["credit_card"] == 1 and not outcome.changed


def test_block_marks_the_policy_and_does_not_rewrite() -> None:
    out, outcome = rewrite(TEXT, policy(name="strict", action="block", detectors=["credit_card"]))
    assert out is TEXT
    assert outcome.blocked_by == "llm/strict" and outcome.blocked_detector == "credit_card"


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        (("log", "mask"), b"[CARD ****1111]"),
        (("mask", "hash"), b"[HASH:credit_card:"),
        (("hash", "redact"), b"[REDACTED:credit_card]"),
        (("redact", "mask", "log"), b"[REDACTED:credit_card]"),
    ],
)
def test_strictest_action_wins(actions: tuple[str, ...], expected: bytes) -> None:
    pols = [policy(name=f"p{i}", action=a) for i, a in enumerate(actions)]
    out, _ = rewrite(b"4111 1111 1111 1111", *pols)
    assert out.startswith(expected)


def test_block_beats_everything_and_names_its_policy() -> None:
    _, outcome = rewrite(
        b"4111 1111 1111 1111", policy(name="a", action="redact"), policy(name="b", action="block")
    )
    assert outcome.blocked_by == "llm/b"


def test_allow_list_is_per_policy_and_ignores_case_and_separators() -> None:
    allow = policy(name="a", action="mask", allow=["Support@Example.com", "4111-1111-1111-1111"])
    out, outcome = rewrite(b"support@example.com 4111 1111 1111 1111 jane@example.com", allow)
    assert out == b"support@example.com 4111 1111 1111 1111 [EMAIL ****]"
    assert outcome.counts == {"email": 1}
    # another policy that does not allow the value still flags it
    out, _ = rewrite(b"support@example.com", allow, policy(name="b", action="redact", detectors=["email"]))
    assert out == b"[REDACTED:email]"


def test_direction_selects_plans() -> None:
    compiled = plans(
        policy(name="in", direction="request"), policy(name="out", direction="response", action="block")
    )
    assert [r.policy for r in compiled["request"].rules] == ["llm/in"]
    assert [r.policy for r in compiled["response"].rules] == ["llm/out"]
    assert "response" not in plans(policy(direction="request"))


def test_detectors_limit_what_is_scanned() -> None:
    out, outcome = rewrite(TEXT, policy(detectors=["email"]))
    assert out.count(b"[") == 1 and outcome.counts == {"email": 1}


def test_custom_detectors() -> None:
    pol = policy(
        detectors=[
            {"name": "employee-id", "regex": "EMP-[0-9]{6}"},
            {"name": "codenames", "terms": ["bluebird"]},
        ]
    )
    out, outcome = rewrite(b"EMP-123456 on project BlueBird, card 4111111111111111", pol)
    assert out == b"[EMPLOYEE-ID ****] on project [CODENAMES ****], card 4111111111111111"
    assert outcome.counts == {"employee-id": 1, "codenames": 1}


@pytest.mark.parametrize(
    "spec",
    [
        {"detectors": ["passport"]},
        {"detectors": [{"name": "x", "regex": r"\bx\b"}]},
        {"detectors": [{"name": "x", "regex": "a", "terms": ["a"]}]},
        {"detectors": [{"name": "email", "terms": ["a"]}]},
        {"detectors": ["email", "email"]},
        {"action": "shred"},
        {"direction": "sideways"},
        {"failMode": "maybe"},
        {"limits": {"maxRecords": -1}},
        {"unknownField": 1},
    ],
)
def test_invalid_policies_are_refused(spec: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        policy(**spec)


def test_json_body_rewrites_string_values_only() -> None:
    plan = plans(policy())["request"]
    body = b'{"model":"m","messages":[{"role":"user","content":"my card is 4111 1111 1111 1111"}],"n":4111111111111111}'
    out = inspect_body(plan, redactor(), body, "application/json", None, Outcome())
    assert out == (
        b'{"model":"m","messages":[{"role":"user","content":"my card is [CARD ****1111]"}],"n":4111111111111111}'
    )


def test_oip_bytes_tensor_is_rewritten() -> None:
    plan = plans(policy())["request"]
    body = (
        b'{"inputs":[{"name":"text","datatype":"BYTES","shape":[2],"data":["ok","mail jane@example.com"]}]}'
    )
    out = inspect_body(plan, redactor(), body, "application/json", None, Outcome())
    assert b"[EMAIL ****]" in out and b"jane@" not in out


@pytest.mark.parametrize(
    ("body", "content_type", "encoding"),
    [
        (b'{"broken": ', "application/json", None),
        (b"\x1f\x8b\x08\x00", "application/json", "gzip"),
        (b"\x89PNG\r\n", "image/png", None),
        (b"x" * 2048, "text/plain", None),
    ],
)
def test_uninspectable_bodies(body: bytes, content_type: str, encoding: str | None) -> None:
    plan = plans(policy(maxBodyBytes=1024))["request"]
    with pytest.raises(Uninspectable):
        inspect_body(plan, redactor(), body, content_type, encoding, Outcome())


@pytest.mark.parametrize(
    ("doc", "records"),
    [
        ([1, 2, 3], 3),
        ({"object": "list", "data": [{"embedding": [0.1]}] * 5}, 5),
        ({"predictions": [[1], [2]]}, 2),
        ({"outputs": [{"name": "y", "shape": [7, 1], "data": [0] * 7}]}, 7),
        ({"choices": [{}, {}]}, 2),
        ({"answer": "x"}, 1),
    ],
)
def test_record_counts(doc: object, records: int) -> None:
    assert count_records(doc) == records


def test_json_rewrite_keeps_the_formatting_and_never_touches_keys() -> None:
    plan = plans(policy())["request"]
    pretty = b'{\n  "a": "mail jane@example.com",\n  "b": [1, 2]\n}'
    out = inspect_body(plan, redactor(), pretty, "application/json", None, Outcome())
    assert out == b'{\n  "a": "mail [EMAIL ****]",\n  "b": [1, 2]\n}'
    same = b'{"4111 1111 1111 1111": "4111 1111 1111 1111"}'  # a key with the value's bytes
    out = inspect_body(plan, redactor(), same, "application/json", None, Outcome())
    assert json.loads(out) == {"4111 1111 1111 1111": "[CARD ****1111]"}
    escaped = b'{"a": "line\\nmail jane@example.com \\u00e9"}'
    out = inspect_body(plan, redactor(), escaped, "application/json", None, Outcome())
    assert json.loads(out) == {"a": "line\nmail [EMAIL ****] \u00e9"}


def test_deeply_nested_json_is_uninspectable_not_a_crash() -> None:
    plan = plans(policy())["request"]
    for body in (b"[" * 100_000 + b"]" * 100_000, b'[{"a":"\\n"' + b",[" * 990 + b"]" * 990 + b"}]"):
        with pytest.raises(Uninspectable):
            inspect_body(plan, redactor(), body, "application/json", None, Outcome())
