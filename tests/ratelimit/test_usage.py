"""Token usage from OpenAI-compatible responses: JSON, SSE split anywhere, gzip, estimates."""

from __future__ import annotations

import gzip
import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.ai.types import TokenUsage
from meshward.ai.usage import UsageMeter, estimate_text_tokens, usage_from_json


def sse(*events: Any, usage: dict[str, int] | None = None) -> bytes:
    out = b""
    for e in events:
        out += b"data: " + json.dumps(e).encode() + b"\n\n"
    if usage is not None:
        out += b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n"
    return out + b"data: [DONE]\n\n"


def delta(text: str) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}}],
        "usage": None,
    }


def run(
    body: bytes, ctype: str, cuts: list[int] | None = None, encoding: str = "", status: int = 200, **kw: Any
) -> UsageMeter:
    meter = UsageMeter(**kw)
    hdrs = [("Content-Type", ctype)] + ([("Content-Encoding", encoding)] if encoding else [])
    meter.start(status, hdrs)
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in (cuts or []))})
    for a, b in itertools.pairwise(points):
        meter.feed(body[a:b])
    meter.finish()
    return meter


@pytest.mark.parametrize(
    ("obj", "usage"),
    [
        ({"usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}, TokenUsage(3, 4)),
        ({"usage": {"input_tokens": 5, "output_tokens": 6}}, TokenUsage(5, 6)),
        (
            {"type": "response.completed", "response": {"usage": {"input_tokens": 1, "output_tokens": 2}}},
            TokenUsage(1, 2),
        ),
        ({"usage": {"prompt_tokens": 9, "total_tokens": 9}}, TokenUsage(9, 0)),
        ({"usage": None}, None),
        ({"usage": {"prompt_tokens": -1}}, None),
        ({"usage": {"prompt_tokens": True}}, None),
        ([1, 2], None),
    ],
)
def test_usage_from_json(obj: Any, usage: TokenUsage | None) -> None:
    assert usage_from_json(obj) == usage


def test_json_response_usage() -> None:
    body = json.dumps(
        {"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}
    )
    assert run(body.encode(), "application/json").result(100) == TokenUsage(7, 2)


def test_json_without_usage_is_estimated_from_the_answer() -> None:
    body = json.dumps({"choices": [{"message": {"content": "x" * 40}}]}).encode()
    assert run(body, "application/json").result(9) == TokenUsage(9, 10, estimated=True)


def test_error_response_counts_nothing() -> None:
    assert run(b'{"error": "bad"}', "application/json", status=400).result(50) == TokenUsage(
        0, 0, estimated=True
    )


def test_gzip_json_is_read() -> None:
    body = gzip.compress(json.dumps({"usage": {"prompt_tokens": 4, "completion_tokens": 8}}).encode())
    assert run(body, "application/json", encoding="gzip").result(None) == TokenUsage(4, 8)


def test_unknown_encoding_is_estimated_from_the_wire_size() -> None:
    meter = run(b"\x00" * 400, "application/json", encoding="br")
    assert meter.result(3) == TokenUsage(3, 100, estimated=True)


STREAM = sse(delta("Hel"), delta("lo, "), delta("world"), usage={"prompt_tokens": 11, "completion_tokens": 3})


@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
def test_sse_usage_found_however_the_stream_is_split(cuts: list[int]) -> None:
    assert run(STREAM, "text/event-stream; charset=utf-8", cuts).result(99) == TokenUsage(11, 3)


@settings(max_examples=100, deadline=None)
@given(
    pieces=st.lists(st.text(min_size=0, max_size=20), max_size=20),
    cuts=st.lists(st.integers(0, 5000), max_size=10),
)
def test_sse_without_usage_estimates_from_streamed_text(pieces: list[str], cuts: list[int]) -> None:
    body = sse(*(delta(p) for p in pieces))
    chars = sum(len(p) for p in pieces)
    assert run(body, "text/event-stream", cuts).result(5) == TokenUsage(5, -(-chars // 4), estimated=True)


def test_sse_crlf_and_trailing_line_without_newline() -> None:
    body = b'data: {"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1}}'
    assert run(body, "text/event-stream").result(0) == TokenUsage(2, 1)
    body = b'event: x\r\ndata: {"choices":[{"delta":{"content":"abcd"}}]}\r\n\r\n'
    assert run(body, "text/event-stream").result(0) == TokenUsage(0, 1, estimated=True)


def test_gzip_sse_is_read_incrementally() -> None:
    body = gzip.compress(STREAM)
    assert run(body, "text/event-stream", [5, 17, 40], encoding="gzip").result(0) == TokenUsage(11, 3)


def test_meter_keeps_only_a_partial_line_for_streams() -> None:
    meter = UsageMeter()
    meter.start(200, [("content-type", "text/event-stream")])
    for _ in range(1000):
        meter.feed(b'data: {"choices":[{"delta":{"content":"tok"}}]}\n\n')
    meter.feed(b'data: {"choi')
    assert len(meter._line) == len(b'data: {"choi')


@pytest.mark.parametrize(("text", "tokens"), [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2)])
def test_estimate_text_tokens(text: str, tokens: int) -> None:
    assert estimate_text_tokens(text) == tokens


def test_huge_json_keeps_only_its_tail_and_still_finds_usage() -> None:
    vectors = [{"object": "embedding", "index": i, "embedding": [0.125] * 256} for i in range(2000)]
    body = json.dumps({"object": "list", "data": vectors, "usage": {"prompt_tokens": 77, "total_tokens": 77}})
    assert len(body) > 2 * 1024 * 1024
    meter = run(body.encode(), "application/json", cuts=list(range(0, len(body), 65536)))
    assert len(meter._buffer) == 0  # released at the end; never more than the tail while streaming
    assert meter.result(5) == TokenUsage(77, 0)


def test_huge_gzip_json_with_usage_in_the_tail() -> None:
    body = json.dumps({"data": ["x" * 1000] * 3000, "usage": {"prompt_tokens": 9, "completion_tokens": 1}})
    meter = run(gzip.compress(body.encode()), "application/json", cuts=[100, 5000], encoding="gzip")
    assert meter.result(0) == TokenUsage(9, 1)


def test_compression_bomb_is_not_inflated_past_the_bound() -> None:
    bomb = gzip.compress(b"{" + b" " * (8 * 1024 * 1024) + b'"usage": {"prompt_tokens": 1}}')
    meter = run(bomb, "application/json", encoding="gzip", max_inflated=4 * 1024 * 1024)
    assert meter.result(0).estimated  # gave up reading: estimated from the wire size
