"""The scanner: Hyperscan and the pure-Python engine give the same findings; near misses."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.dlp.detectors import (
    BUILTIN_DETECTORS,
    builtin_patterns,
    regex_pattern,
    terms_pattern,
    user_regex_problem,
)
from meshward.dlp.scanner import HYPERSCAN_AVAILABLE, Scanner, hyperscan_problem
from meshward.resources.dataprotection import BUILTIN_DETECTOR_NAMES

PATTERNS = [
    *builtin_patterns(frozenset(BUILTIN_DETECTORS)),
    regex_pattern("employee-id", "EMP-[0-9]{6}"),
    regex_pattern("ticket", "[A-Z]{2,5}-[0-9]+"),
    terms_pattern("codenames", ["bluebird", "red falcon", "x"]),
]
needs_hyperscan = pytest.mark.skipif(not HYPERSCAN_AVAILABLE, reason="hyperscan not installed")

# Fragments that make candidates (and near misses) frequent in generated text.
FRAGMENTS = [
    "4111 1111 1111 1111",
    "4111111111111111",
    "4111-1111-1111-1112",
    "john.doe@example.com",
    "a@b.co",
    "@",
    "+44 20 7946 0958",
    "(415) 555-2671",
    "415-555-2671",
    "DE89 3704 0044 0532 0130 00",
    "DE89370400440532013000",
    "234-56-7890",
    "12345678Z",
    "10.0.0.12",
    "1.2.3.4.5",
    "2001:db8::8a2e:370:7334",
    "::ffff:192.0.2.1",
    "AKIAIOSFODNN7EXAMPLE",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlMTIzNDU2",
    "sk-proj-AbCdEf1234567890GhIjKlMnOpQrStUvWxYz0123",
    "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----",
    "EMP-123456",
    "ABC-42",
    "Bluebird",
    "red falcon",
]
ALPHABET = "0123456789 -.:@+()/_\nabcdefxyzABCDEFXYZ"
text_strategy = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(alphabet=ALPHABET, max_size=12)), max_size=30
).map("".join)


@needs_hyperscan
@settings(max_examples=300, deadline=None)
@given(text_strategy)
def test_hyperscan_and_re_give_the_same_findings(text: str) -> None:
    data = text.encode()
    assert HS.scan(data) == RE.scan(data)


if HYPERSCAN_AVAILABLE:
    HS = Scanner(PATTERNS, "hyperscan")
RE = Scanner(PATTERNS, "re")


def found(text: str) -> list[tuple[str, str]]:
    data = text.encode()
    return [(f.detector, data[f.start : f.end].decode()) for f in RE.scan(data)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pay with 4111 1111 1111 1111 now", [("credit_card", "4111 1111 1111 1111")]),
        ("pay with 4111 1111 1111 1112 now", []),  # 16 digits failing Luhn
        ("the C4 and S3 models", []),
        ("a 16-digit id 1234567890123456", []),
        ("version 1.2.3.4 of the server", [("ip_address", "1.2.3.4")]),  # documented: flagged
        ("v1.2.3.4 and 1.2.3.4.5 and 256.1.1.1", []),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            [("secrets", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")],
        ),
        (
            "EMP-123456 and XEMP-123456",
            [("employee-id", "EMP-123456"), ("ticket", "XEMP-123456")],
        ),  # longest wins
        ("bluebirds are not Bluebird", [("codenames", "Bluebird")]),
        ("card:4111111111111111.", [("credit_card", "4111111111111111")]),
    ],
)
def test_findings_table(text: str, expected: list[tuple[str, str]]) -> None:
    assert found(text) == expected


def test_overlapping_candidates_resolve_to_one_finding() -> None:
    # a phone candidate inside an IP candidate, an SSN inside a longer digit run
    assert found("ip 192.168.100.200") == [("ip_address", "192.168.100.200")]
    assert found("id 234-56-7890-1") == []


def test_builtin_names_agree_with_the_resource_model() -> None:
    assert tuple(BUILTIN_DETECTORS) == tuple(BUILTIN_DETECTOR_NAMES)


@pytest.mark.parametrize(
    "regex",
    [r"\bEMP\b", "EMP$", "(?=x)EMP", "(?<!x)EMP", r"(a)\1", "a{,3}", "[[:alpha:]]+", "x*", "("],
)
def test_user_regexes_that_engines_would_read_differently_are_refused(regex: str) -> None:
    assert user_regex_problem(regex) is not None


def test_portable_user_regex_is_accepted() -> None:
    assert user_regex_problem("EMP-[0-9]{6}") is None
    assert hyperscan_problem(b"EMP-[0-9]{6}") is None


def test_may_find_gates_on_any_candidate() -> None:
    for scanner in [RE, *([HS] if HYPERSCAN_AVAILABLE else [])]:
        assert not scanner.may_find(
            b'{"model": "tiny", "messages": [{"role": "user", "content": "hello there"}]}'
        )
        assert scanner.may_find(b'{"content": "4111 1111 1111 1111"}')
        assert scanner.may_find(b'{"content": "call 4111 1111 1111 1112"}')  # a candidate, not a finding


@pytest.mark.parametrize("regex", ["^EMP", "EMP$", r"\AEMP"])
def test_anchors_are_refused(regex: str) -> None:
    assert user_regex_problem(regex) is not None


@pytest.mark.parametrize("regex", ["[^,]+@corp", r"\$[0-9]+", r"\^x"])
def test_negated_classes_and_escapes_are_not_anchors(regex: str) -> None:
    assert user_regex_problem(regex) is None
