"""The three spellings of an identity mean the same workload; anything else is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshward.identity.spiffe import InvalidSpiffeId, SpiffeId, parse_identity

SEG = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True)


@pytest.mark.parametrize(
    "text",
    ["spiffe://demo.local/ns/ml/sa/fraud", "demo.local/ns/ml/sa/fraud", "ml/fraud", "  ml/fraud "],
)
def test_spellings_agree(text: str) -> None:
    assert parse_identity(text, "demo.local") == SpiffeId("demo.local", "ml", "fraud")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ml",
        "spiffe://demo.local/ml/fraud",
        "http://demo.local/ns/ml/sa/x",
        "a/b/c",
        "ml/fr aud",
        "Demo/ns/a/sa/b",
    ],
)
def test_refused(text: str) -> None:
    with pytest.raises(InvalidSpiffeId):
        parse_identity(text, "demo.local")


@given(ns=SEG, sa=SEG)
def test_round_trip(ns: str, sa: str) -> None:
    sid = SpiffeId("demo.local", ns, sa)
    for form in (sid.uri, sid.principal, sid.short):
        assert parse_identity(form, "demo.local") == sid
