"""The example models as real processes, called with httpx, http.client and the openai SDK."""

from __future__ import annotations

import base64
import http.client
import json
import math
import socket
import struct
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from examples.clients.infer import transactions
from examples.models.chat import count_tokens, stream_pieces
from examples.models.fraud import sample_rows
from tests.support.models import example_model

pytestmark = pytest.mark.e2e

CARD = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with example_model(tmp_path_factory.mktemp("chat"), "examples.models.chat") as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with example_model(
        tmp_path_factory.mktemp("echo"), "examples.models.chat", "--echo", "--test-hooks"
    ) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def fraud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("fraud")
    with example_model(tmp, "examples.models.fraud", ready="/v2/health/ready") as port:
        yield f"http://127.0.0.1:{port}"


def _client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=10)


# -- chat ------------------------------------------------------------------------------------


def test_chat_non_stream_is_deterministic_with_consistent_usage(chat: str) -> None:
    client = _client(chat)
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What does the mesh do?"},
    ]
    first = client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=12)
    again = client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=12)
    text = first.choices[0].message.content
    assert text and text == again.choices[0].message.content
    assert first.model == "tiny-chat" and first.object == "chat.completion"
    assert first.usage is not None
    assert first.usage.prompt_tokens == count_tokens("Be brief.\nWhat does the mesh do?") == 9
    assert first.usage.completion_tokens == count_tokens(text) <= 12
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens


def test_chat_stream_matches_non_stream_and_ends_with_usage(chat: str) -> None:
    client = _client(chat)
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Tell me about tokens and budgets"}
    ]
    whole = client.chat.completions.create(model="tiny-chat", messages=messages)
    chunks = list(
        client.chat.completions.create(
            model="tiny-chat",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == whole.choices[0].message.content
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason


def test_chat_stream_without_include_usage_has_no_usage(chat: str) -> None:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", chat + "/v1/chat/completions", json=body, timeout=10) as r:
        assert r.headers["content-type"] == "text/event-stream"
        assert r.headers["transfer-encoding"] == "chunked"
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert all("usage" not in json.loads(e) for e in events[:-1])


def test_test_hooks_are_ignored_without_the_flag(chat: str) -> None:
    client = _client(chat)
    msgs: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
    plain = client.chat.completions.create(model="m", messages=msgs)
    hooked = client.chat.completions.create(model="m", messages=msgs, extra_headers={"X-Test-Append": CARD})
    assert hooked.choices[0].message.content == plain.choices[0].message.content
    assert CARD not in (hooked.choices[0].message.content or "")


def test_completions_and_models_and_errors(chat: str) -> None:
    client = _client(chat)
    done = client.completions.create(model="tiny-chat", prompt="A model answers", max_tokens=6)
    assert done.choices[0].text and done.usage is not None and done.usage.completion_tokens <= 6
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="tiny-chat", prompt="A model answers", max_tokens=6, stream=True
        )
        if c.choices
    )
    assert streamed == done.choices[0].text
    assert [m.id for m in client.models.list()] == ["tiny-chat"]
    assert client.models.retrieve("tiny-chat").id == "tiny-chat"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-nope")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=[])
    bad = httpx.post(chat + "/v1/chat/completions", content=b"{not json", timeout=5)
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(chat + "/v1/nothing", timeout=5).status_code == 404


def test_embeddings_are_deterministic_unit_vectors(chat: str) -> None:
    client = _client(chat)
    via_sdk = client.embeddings.create(
        model="tiny-embed", input=["card data", "hello world"]
    )  # SDK asks for base64
    floats = httpx.post(
        chat + "/v1/embeddings", json={"input": ["card data", "hello world"]}, timeout=5
    ).json()
    for got, want in zip(via_sdk.data, floats["data"], strict=True):
        assert got.embedding == pytest.approx(want["embedding"], abs=1e-6)
    for d in floats["data"]:
        assert len(d["embedding"]) == 32
        assert math.isclose(math.sqrt(sum(v * v for v in d["embedding"])), 1.0, rel_tol=1e-9)
    assert floats["data"][0]["embedding"] != floats["data"][1]["embedding"]
    assert via_sdk.usage.prompt_tokens == 4
    raw = httpx.post(
        chat + "/v1/embeddings", json={"input": "x", "dimensions": 8, "encoding_format": "base64"}, timeout=5
    )
    assert len(struct.unpack("<8f", base64.b64decode(raw.json()["data"][0]["embedding"]))) == 8


def test_keep_alive_and_chunked_request_bodies(chat: str) -> None:
    host, port = chat.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/health")
        first = conn.getresponse()
        assert first.status == 200 and json.loads(first.read()) == {"status": "ok"}
        sock = conn.sock
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "chunked"}]}).encode()
        conn.request("POST", "/v1/chat/completions", body=iter([body[:10], body[10:]]), encode_chunked=True)
        second = conn.getresponse()
        assert second.status == 200 and json.loads(second.read())["usage"]["prompt_tokens"] == 1
        assert conn.sock is sock  # the same connection served both
    finally:
        conn.close()


def test_echo_returns_the_last_user_message_verbatim(echo: str) -> None:
    client = _client(echo)
    said = "My email is jane@example.com, call +1 415 555 0100."
    msgs: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "earlier"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": said},
    ]
    reply = client.chat.completions.create(model="m", messages=msgs)
    assert reply.choices[0].message.content == said
    parts: list[ChatCompletionMessageParam] = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "part one, "}, {"type": "text", "text": "part two"}],
        }
    ]
    assert (
        client.chat.completions.create(model="m", messages=parts).choices[0].message.content
        == "part one, part two"
    )


def test_append_hook_streams_a_card_number_across_chunks(echo: str) -> None:
    client = _client(echo)
    stream = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Your card is"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-Test-Append": CARD},
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == f"Your card is {CARD}"
    assert all(CARD not in d for d in deltas) and deltas[-4:] == [" 4111", " 1111", " 1111", " 1111"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7


@pytest.mark.parametrize("text", ["", "a", "  lead and trail  ", "x,y!\n\tz", "don't stop 4111-1111"])
def test_stream_pieces_rejoin_to_the_text(text: str) -> None:
    pieces = stream_pieces(text)
    assert "".join(pieces) == text
    assert sum(1 for p in pieces if p.strip()) == count_tokens(text)


# -- fraud -----------------------------------------------------------------------------------


def _infer(base: str, rows: list[list[float]], **extra: object) -> httpx.Response:
    tensor = {"name": "input-0", "shape": [len(rows), 30], "datatype": "FP32", "data": rows}
    return httpx.post(base + "/v2/models/fraud/infer", json={"inputs": [tensor], **extra}, timeout=10)


def test_fraud_health_and_metadata(fraud: str) -> None:
    assert httpx.get(fraud + "/v2/health/live").json() == {"live": True}
    assert httpx.get(fraud + "/v2/health/ready").json() == {"ready": True}
    assert httpx.get(fraud + "/v2").json()["extensions"] == ["model_repository"]
    meta = httpx.get(fraud + "/v2/models/fraud").json()
    assert meta["inputs"][0]["shape"] == [-1, 30] and {o["name"] for o in meta["outputs"]} == {
        "predict",
        "probability",
    }
    assert httpx.get(fraud + "/v2/models/fraud/versions/1").json() == meta
    assert httpx.get(fraud + "/v2/models/other").status_code == 404


def test_fraud_infer_separates_the_classes(fraud: str) -> None:
    rows = sample_rows(20, fraud=True) + sample_rows(20, fraud=False)
    resp = _infer(fraud, rows, id="req-1")
    assert resp.status_code == 200
    body = resp.json()
    assert body["id"] == "req-1" and body["model_name"] == "fraud"
    predict = next(o for o in body["outputs"] if o["name"] == "predict")
    assert predict["shape"] == [40] and predict["datatype"] == "INT64"
    assert sum(predict["data"][:20]) >= 18 and sum(predict["data"][20:]) <= 2
    only = _infer(fraud, rows[:1], outputs=[{"name": "probability"}]).json()["outputs"]
    assert [o["name"] for o in only] == ["probability"] and 0.0 <= only[0]["data"][0] <= 1.0


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"inputs": []},
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
        {"inputs": [{"name": "x", "shape": [1, 30], "datatype": "BYTES", "data": ["a"] * 30}]},
        {"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP32", "data": ["a"] * 30}]},
    ],
)
def test_fraud_rejects_bad_tensors(fraud: str, body: dict[str, object]) -> None:
    resp = httpx.post(fraud + "/v2/models/fraud/infer", json=body, timeout=5)
    assert resp.status_code == 400 and resp.json()["error"]


def test_fraud_unload_and_load_through_the_repository(fraud: str) -> None:
    rows = sample_rows(1)
    try:
        assert httpx.post(fraud + "/v2/repository/models/fraud/unload").status_code == 200
        assert httpx.get(fraud + "/v2/models/fraud/ready").status_code == 503
        assert httpx.post(fraud + "/v2/repository/index").json()[0]["state"] == "UNAVAILABLE"
        assert _infer(fraud, rows).status_code == 503
    finally:
        assert httpx.post(fraud + "/v2/repository/models/fraud/load").status_code == 200
    assert httpx.get(fraud + "/v2/models/fraud/ready").json() == {"name": "fraud", "ready": True}
    assert _infer(fraud, rows).status_code == 200


def test_infer_client_reads_the_same_rows_as_the_model() -> None:
    assert transactions(5) == sample_rows(5)
    assert transactions(4, fraud=True) == sample_rows(4, fraud=True)
    assert transactions(4, fraud=False) == sample_rows(4, fraud=False)


@pytest.mark.parametrize(
    "head",
    [
        b"Content-Length: -5\r\n\r\n",
        b"Content-Length: many\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_bad_body_framing_gets_400_and_a_closed_connection(chat: str, head: bytes) -> None:
    host, port = chat.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + head)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    assert received.startswith(b"HTTP/1.1 400 ") and b"malformed request body framing" in received
