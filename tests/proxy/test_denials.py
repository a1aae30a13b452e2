"""One rescue: a Denial's kind decides status and flag, its facts the body's extra fields."""

from __future__ import annotations

import json
import typing

import pytest

from meshward.filters.base import Denial, DenialKind
from meshward.proxy.responses import DENIALS, denial_reply

KINDS: list[tuple[DenialKind, int, str]] = [
    ("authn", 401, "UAEX"),
    ("authz", 403, "RBAC"),
    ("ratelimit", 429, "RL"),
    ("dlp", 403, "DLP"),
    ("export", 403, "DLP"),
    ("bad_request", 400, "DPE"),
    ("not_found", 404, "NR"),
    ("too_large", 413, "DPE"),
    ("unavailable", 503, "UH"),
]


def test_every_kind_of_the_contract_has_one_answer() -> None:
    assert set(typing.get_args(DenialKind)) == set(DENIALS) == {kind for kind, _, _ in KINDS}


@pytest.mark.parametrize(("kind", "status", "flag"), KINDS)
def test_the_kind_decides_status_and_flag(kind: DenialKind, status: int, flag: str) -> None:
    reply = denial_reply(Denial(kind, message="no"), "r1")
    assert (reply.status, reply.flag) == (status, flag)
    assert reply.data.startswith(b"HTTP/1.1 %d " % status)
    # a filter that names another status does not get to bypass the mapping
    assert denial_reply(Denial(kind, 299, "no"), "r1").status == status


def test_facts_are_the_body_extra_fields_and_older_callers_still_work() -> None:
    old = Denial("ratelimit", 429, "rate limited", policy="ns/p", rule="per-user", body={"retry_after": 3})
    new = Denial(
        "ratelimit", message="rate limited", policy="ns/p", rule="per-user", facts={"retry_after": 3}
    )
    assert old.body == old.facts == new.facts == {"retry_after": 3}
    assert denial_reply(old, "r9").data == denial_reply(new, "r9").data
    reply = denial_reply(new, "r9", protocol="openai")
    doc = json.loads(reply.data.partition(b"\r\n\r\n")[2])
    assert doc["retry_after"] == 3 and doc["request_id"] == "r9"
    assert (
        "retry after 3s" in doc["error"]["message"]
        and "policy ns/p limit per-user" in doc["error"]["message"]
    )
