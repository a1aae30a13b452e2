"""DLP end to end: the openai SDK → client sidecar ─mTLS─▶ server sidecar (DLP) → echo model.

The model (``examples.models.chat --echo --test-hooks``) answers with the prompt it received,
so a test sees what the model saw; ``X-Test-Append`` makes it add text to its answer, streamed
token by token (so a card number crosses SSE events).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.dlp.helpers import policy_doc
from tests.support.models import example_model
from tests.support.sidecar import MeshPair, mesh_pair

pytestmark = pytest.mark.e2e

CARD = "4111 1111 1111 1111"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
POLICIES = [
    policy_doc("pii", action="mask", detectors=["email", "phone", "credit_card", "iban", "national_id"]),
    policy_doc("secrets", action="block", detectors=["secrets"]),
    policy_doc(
        "export",
        direction="response",
        detectors=["ip_address"],
        action="log",
        limits={"maxRecords": 3, "maxResponseBytes": 4000},
    ),
]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshPair]:
    tmp: Path = tmp_path_factory.mktemp("dlp-e2e")
    with (
        example_model(tmp, "examples.models.chat", "--echo", "--test-hooks") as port,
        mesh_pair(tmp, port, server_policies=POLICIES, default_policy="allow") as p,
    ):
        yield p


@pytest.fixture
def client(pair: MeshPair) -> Iterator[openai.OpenAI]:
    sdk = pair.openai_client(timeout=15)
    yield sdk
    sdk.close()


def ask(client: openai.OpenAI, prompt: str, **kw: object) -> str:
    done = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}], **kw)  # type: ignore[call-overload]
    return str(done.choices[0].message.content)


def test_the_model_sees_a_masked_prompt(client: openai.OpenAI) -> None:
    answer = ask(client, f"charge {CARD} and mail jane.doe@example.com")
    assert answer == "charge [CARD ****1111] and mail [EMAIL ****]"


def test_a_secret_in_the_prompt_is_refused_with_403_naming_the_policy(client: openai.OpenAI) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        ask(client, f"my key is {AWS_KEY}")
    reply = info.value.response.json()
    assert reply["policy"] == "llm/secrets" and reply["detector"] == "secrets"
    assert "llm/secrets" in reply["error"]["message"] and AWS_KEY not in info.value.response.text


def test_a_card_streamed_token_by_token_is_masked(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "say something"}],
        stream=True,
        extra_headers={"X-Test-Append": f"your card is {CARD} ok"},
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    text = "".join(pieces)
    assert "4111" not in text and "[CARD ****1111]" in text
    assert text == "say something your card is [CARD ****1111] ok"
    assert len([p for p in pieces if p]) > 3  # still streamed, not one lump


def test_a_secret_in_a_streamed_answer_cuts_the_stream_with_an_error_event(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        extra_headers={"X-Test-Append": f"the key is {AWS_KEY} bye"},
    )
    received: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for c in stream:
            received.extend(ch.delta.content or "" for ch in c.choices)
    assert "llm/secrets" in str(info.value)
    assert "AKIA" not in "".join(received)


def test_max_records_refuses_bulk_embeddings_with_403_naming_the_policy(client: openai.OpenAI) -> None:
    ok = client.embeddings.create(model="e", input=["a", "b", "c"])
    assert len(ok.data) == 3
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.embeddings.create(model="e", input=["a", "b", "c", "d", "e"])
    err = info.value
    assert err.status_code == 403
    doc = err.response.json()
    assert (doc["policy"], doc["reason"], doc["limit"]) == ("llm/export", "export_limit", "maxRecords")
    assert isinstance(err.body, dict) and "llm/export" in err.body["message"]  # OpenAI's error shape
    assert "embedding" not in err.response.text.replace("export", "")  # no record leaked


def test_max_response_bytes_refuses_a_large_answer_with_403(client: openai.OpenAI, pair: MeshPair) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        ask(client, "word " * 1000)
    err = info.value
    assert err.status_code == 403
    doc = err.response.json()
    assert (doc["policy"], doc["limit"]) == ("llm/export", "maxResponseBytes")
    assert "word word" not in err.response.text
    # the connection to the client stays usable after the refusal
    assert ask(client, "hello") == "hello"


def test_fail_closed_refuses_a_compressed_prompt(pair: MeshPair) -> None:
    body = gzip.compress(
        json.dumps({"model": "tiny", "messages": [{"role": "user", "content": CARD}]}).encode()
    )
    with pair.http_client(timeout=15) as c:
        r = c.post(
            f"{pair.service_url}/v1/chat/completions",
            content=body,
            headers={"content-type": "application/json", "content-encoding": "gzip"},
        )
        broken = c.post(
            f"{pair.service_url}/v1/chat/completions",
            content=b'{"messages": [',
            headers={"content-type": "application/json"},
        )
    assert r.status_code == 403 and r.json()["reason"] == "uninspectable"
    assert broken.status_code == 403 and broken.json()["reason"] == "uninspectable"


def test_a_card_in_a_json_answer_is_masked(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"X-Test-Append": f"card {CARD}, mail ops@example.com"},
    )
    assert done.choices[0].message.content == "hi card [CARD ****1111], mail [EMAIL ****]"
    assert done.usage is not None and done.usage.total_tokens > 0  # the rest of the document is intact


def test_export_limit_cuts_a_long_stream_with_an_error_the_sdk_raises(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "word " * 200}], stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for c in stream:
            received.extend(ch.delta.content or "" for ch in c.choices)
    assert "llm/export" in str(info.value) and "maxResponseBytes" in str(info.value)
    text = "".join(received)  # what was released before the cut (the window may hold it all)
    assert len(text) < len("word " * 200) and set(text.split()) <= {"word"}
