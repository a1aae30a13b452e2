"""The DLP filter's hooks, driven like the sidecar drives them (no network)."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from meshward.filters.base import (
    Denial,
    Filter,
    Peer,
    RequestContext,
    ResponseDenied,
    SidecarRuntime,
    StreamAbort,
)
from meshward.filters.dlp import build, hash_key
from tests.dlp.helpers import chat_event, policy_doc
from tests.support.sidecar import make_snapshot


def make_filter(tmp_path: Path | None = None, **spec: Any) -> Filter:
    snapshot = make_snapshot("llm/chat", policies=[policy_doc(**spec)])
    runtime = SidecarRuntime(
        workload=snapshot.workload, trust_domain=snapshot.trust_domain, state_dir=tmp_path
    )
    f = build(snapshot, runtime)
    assert f is not None
    return f


def context(
    body: bytes | None = None, content_type: str = "application/json", **headers: str
) -> RequestContext:
    hdrs = {"content-type": content_type, **headers}
    return RequestContext(
        request_id="r1",
        direction="inbound",
        peer=Peer("127.0.0.1", 1234, "spiffe://demo.local/ns/web/sa/webapp"),
        method="POST",
        path="/v1/chat/completions",
        query="",
        host="chat.llm",
        headers=hdrs,
        destination_port=8000,
        start=0.0,
        body=body,
    )


def request(f: Filter, ctx: RequestContext) -> Denial | None:
    assert f.wants_request_body(ctx)
    return asyncio.run(f.on_request(ctx))


def respond(
    f: Filter, ctx: RequestContext, headers: list[tuple[str, str]], chunks: list[bytes]
) -> tuple[bool, bytes]:
    rewrite = f.on_response_headers(ctx, 200, headers)
    out = b"".join(f.on_response_chunk(ctx, c) for c in chunks)
    return rewrite, out + f.on_response_end(ctx)


CHAT = json.dumps(
    {"model": "m", "messages": [{"role": "user", "content": "card 4111 1111 1111 1111"}]}
).encode()


def test_no_policy_no_filter() -> None:
    snapshot = make_snapshot("llm/chat")
    assert build(snapshot, SidecarRuntime(snapshot.workload, snapshot.trust_domain)) is None
    other = make_snapshot("llm/chat", policies=[policy_doc(selector={"matchLabels": {"app": "other"}})])
    assert build(other, SidecarRuntime(other.workload, other.trust_domain)) is None


def test_request_is_masked_and_marked_rewritten() -> None:
    f = make_filter()
    ctx = context(CHAT)
    assert request(f, ctx) is None
    assert ctx.body_rewritten and ctx.body is not None
    assert json.loads(ctx.body)["messages"][0]["content"] == "card [CARD ****1111]"
    assert ctx.findings == {"credit_card": 1}


def test_request_block_is_a_403_naming_the_policy_without_the_value() -> None:
    f = make_filter(action="block")
    ctx = context(CHAT)
    denial = request(f, ctx)
    assert denial is not None and denial.kind == "dlp" and denial.status == 403
    assert denial.policy == "llm/pii" and denial.body["detector"] == "credit_card"
    assert "4111" not in denial.message and not ctx.body_rewritten


@pytest.mark.parametrize(
    ("body", "content_type", "extra"),
    [
        (b'{"messages": [', "application/json", {}),
        (b"\x1f\x8b\x08\x00\x00", "application/json", {"content-encoding": "gzip"}),
        (b"\x00\x01binary", "application/octet-stream", {}),
    ],
)
def test_fail_closed_refuses_an_uninspectable_request(
    body: bytes, content_type: str, extra: dict[str, str]
) -> None:
    f = make_filter()
    denial = request(f, context(body, content_type, **extra))
    assert denial is not None and denial.status == 403 and denial.body["reason"] == "uninspectable"


def test_fail_open_passes_an_uninspectable_request_flagged() -> None:
    f = make_filter(failMode="open")
    ctx = context(b"\x1f\x8b\x08", "application/json", **{"content-encoding": "gzip"})
    assert request(f, ctx) is None
    assert ctx.scratch["dlp"]["fail_open"] == "llm/pii" and not ctx.body_rewritten
    assert ctx.audit_marks == ["dlp-fail-open:llm/pii"]


def test_response_only_policy_does_not_ask_for_the_request_body() -> None:
    f = make_filter(direction="response")
    assert not f.wants_request_body(context(CHAT))


def test_json_response_is_buffered_and_masked() -> None:
    f = make_filter()
    ctx = context()
    body = json.dumps({"choices": [{"message": {"content": "mail jane@example.com"}}]}).encode()
    rewrite, out = respond(f, ctx, [("content-type", "application/json")], [body[:10], body[10:]])
    assert rewrite and b"[EMAIL ****]" in out and json.loads(out)
    assert ctx.findings == {"email": 1}


def test_sse_response_card_split_across_events() -> None:
    f = make_filter()
    ctx = context()
    events = [chat_event("card 4111 1111 "), chat_event("1111 1111 ok")] + [chat_event(" w")] * 200
    _, out = respond(f, ctx, [("content-type", "text/event-stream")], [*events, b"data: [DONE]\n\n"])
    assert b"4111" not in out and b"[CARD ****1111]" in out


def test_sse_response_block_ends_with_an_error_event() -> None:
    f = make_filter(action="block", detectors=["credit_card"])
    ctx = context()
    f.on_response_headers(ctx, 200, [("content-type", "text/event-stream")])
    released = b""
    with pytest.raises(StreamAbort) as info:
        for e in [chat_event("card 4111 1111 1111 1111")] + [chat_event(" more")] * 100:
            released += f.on_response_chunk(ctx, e)
    assert b"4111" not in released
    tail = info.value.tail
    assert tail.startswith(b"data: ") and json.loads(tail[6:])["error"]["policy"] == "llm/pii"
    assert ctx.scratch["dlp"]["blocked"] == "llm/pii"


def test_max_response_bytes_from_content_length_is_a_403_before_any_byte() -> None:
    f = make_filter(limits={"maxResponseBytes": 100})
    ctx = context()
    with pytest.raises(ResponseDenied) as info:
        f.on_response_headers(ctx, 200, [("content-type", "application/json"), ("content-length", "500")])
    denial = info.value.denial
    assert (denial.kind, denial.status, denial.policy, denial.rule) == (
        "export",
        403,
        "llm/pii",
        "maxResponseBytes",
    )
    assert denial.body == {"policy": "llm/pii", "reason": "export_limit", "limit": "maxResponseBytes"}
    assert "llm/pii" in denial.message
    assert ctx.scratch["dlp"]["export_limit"] == "llm/pii:maxResponseBytes"
    assert (ctx.decision, ctx.policy, ctx.rule) == ("deny", "llm/pii", "maxResponseBytes")


def test_max_response_bytes_counted_on_a_stream() -> None:
    f = make_filter(limits={"maxResponseBytes": 1000})
    ctx = context()
    f.on_response_headers(ctx, 200, [("content-type", "text/event-stream")])
    with pytest.raises(StreamAbort):
        for _ in range(100):
            f.on_response_chunk(ctx, chat_event("word "))


def test_max_records_on_embeddings() -> None:
    f = make_filter(limits={"maxRecords": 3})
    ctx = context()
    doc = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": [0.1]} for i in range(5)],
    }
    f.on_response_headers(ctx, 200, [("content-type", "application/json")])
    assert f.on_response_chunk(ctx, json.dumps(doc).encode()) == b""
    with pytest.raises(ResponseDenied) as info:
        f.on_response_end(ctx)
    assert info.value.denial.status == 403 and info.value.denial.rule == "maxRecords"
    assert info.value.denial.policy == "llm/pii"
    # the fallback once bytes have left: an error document naming the policy
    assert json.loads(info.value.tail)["error"]["policy"] == "llm/pii"


def test_compressed_response_fail_closed_and_open() -> None:
    f = make_filter()
    ctx = context()
    headers = [("content-type", "application/json"), ("content-encoding", "gzip")]
    with pytest.raises(ResponseDenied) as info:
        f.on_response_headers(ctx, 200, headers)
    assert info.value.denial.kind == "dlp" and info.value.denial.body["reason"] == "uninspectable"
    assert json.loads(info.value.tail)["error"]["type"] == "dlp_uninspectable"
    f = make_filter(failMode="open")
    ctx = context()
    f.on_response_headers(ctx, 200, [("content-type", "application/json"), ("content-encoding", "gzip")])
    assert f.on_response_chunk(ctx, b"\x1f\x8b") == b"\x1f\x8b"
    assert ctx.scratch["dlp"]["fail_open"] == "llm/pii"


def test_hash_key_is_kept_private_and_stable(tmp_path: Path) -> None:
    snapshot = make_snapshot("llm/chat")
    runtime = SidecarRuntime(snapshot.workload, snapshot.trust_domain, state_dir=tmp_path)
    key = hash_key(runtime)
    path = tmp_path / "dlp-hash.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_bytes() == key
    again = SidecarRuntime(snapshot.workload, snapshot.trust_domain, state_dir=tmp_path)
    assert hash_key(again) == key
