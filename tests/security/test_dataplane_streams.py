"""Response DLP over streamed text fields other than ``choices[].delta.content`` (issue 12: 6),
Ollama's NDJSON lines, and a JSON answer behind a non-JSON ``Content-Type`` (the same class).

The recording app streams an e-mail address split over three events — Responses API
``response.output_text.delta`` events, then tool-call ``function.arguments`` chunks — and the
client must get the whole stream with the address masked, never a piece of it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.security.recorder import SPLIT_EMAIL
from tests.support.sidecar import MeshPair

pytestmark = pytest.mark.e2e


def _events(pair: MeshPair, path: str, request: dict[str, Any]) -> list[dict[str, Any]]:
    with pair.http_client(timeout=20) as client:
        r = client.post(f"{pair.service_url}{path}", json={**request, "stream": True})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/event-stream"
    out = []
    for block in r.text.split("\n\n"):
        data = "".join(line[5:].strip() for line in block.split("\n") if line.startswith("data:"))
        if data and data != "[DONE]":
            out.append(json.loads(data))
    return out


def test_responses_api_deltas_are_one_text(pair: MeshPair) -> None:
    events = _events(pair, "/v1/responses", {"model": "tiny", "input": "hi"})
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "write to [EMAIL ****] today"
    assert len(events) == 3  # still streamed event by event, none dropped


def test_tool_call_argument_chunks_are_one_text(pair: MeshPair) -> None:
    events = _events(pair, "/v1/chat/completions", {"model": "tiny", "messages": []})
    arguments = "".join(
        call["function"]["arguments"] for e in events for call in e["choices"][0]["delta"]["tool_calls"]
    )
    assert arguments == '{"to": "[EMAIL ****]"}'
    assert SPLIT_EMAIL.split("@")[0] not in arguments


def test_a_json_answer_sent_as_text_is_inspected_decoded(pair: MeshPair) -> None:
    with pair.http_client(timeout=20) as client:
        r = client.get(f"{pair.service_url}/escaped")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain"
    assert json.loads(r.text) == {"answer": "mail [EMAIL ****]"}  # what a client parsing it reads


def test_ollama_ndjson_lines_are_one_text(pair: MeshPair) -> None:
    with pair.http_client(timeout=20) as client:
        r = client.post(f"{pair.service_url}/api/chat", json={"model": "m", "messages": []})
    assert r.status_code == 200, r.text
    lines = [json.loads(line) for line in r.text.splitlines() if line]
    text = "".join(line.get("message", {}).get("content", "") for line in lines)
    assert text == "write to [EMAIL ****] today" and len(lines) == 4
