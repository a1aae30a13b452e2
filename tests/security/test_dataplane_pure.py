"""The pure parts of the data-plane hardening: table and property tests (issue 12: 2, 3, 5, 6, 11).

Header hygiene, path normalization against what a decoding server routes, the DLP body
decoders (JSON encodings, sniffing, forms, charsets), classification by body and the stream
field extraction, each checked without a network.
"""

from __future__ import annotations

import itertools
import json
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.ai.protocol import classify, needs_body
from meshward.dlp.body import inspect_body
from meshward.dlp.decode import declared_charset, form_fields, json_encoding, sniff_json
from meshward.dlp.redact import Outcome
from meshward.dlp.stream import NdjsonRewriter, SseRewriter, TextRewriter, streamed_fields
from meshward.http.errors import RemoteProtocolError
from meshward.http.hygiene import MESH_OWNED, clean_request_headers, websocket_upgrade
from meshward.http.normalize import normalize_path
from tests.dlp.helpers import plans, policy, redactor

EMAIL = "jane.doe@example.com"
PLAN = plans(policy(action="mask", detectors=["email", "credit_card"]))["request"]
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]

# ---- header hygiene ------------------------------------------------------------------------------


def _h(*fields: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(n.encode(), v.encode()) for n, v in fields]


@pytest.mark.parametrize(
    ("fields", "connection", "expected"),
    [
        ([("Content-Type", "a/b"), ("X-A", "1")], "close, content-type", {"x-a": "1"}),
        ([("X-A", "1"), ("Upgrade", "websocket")], "upgrade", {"x-a": "1", "upgrade": "websocket"}),
        ([("X_Forwarded_Client_Cert", "x"), ("x-forwarded-client-cert", "y")], None, {}),
        ([("X-Forwarded-For", "1"), ("Forwarded", "for=1"), ("X_Real_IP", "1")], None, {}),
        ([("X_Api_Key", "a"), ("X-Api-Key", "b")], None, {"x-api-key": "b"}),
        ([("Content_Type", "a/b"), ("Transfer_Encoding", "x")], None, {}),
        (
            [("X_Custom", "ok"), ("Cookie", "a=1"), ("cookie", "b=2")],
            None,
            {"x_custom": "ok", "cookie": "a=1; b=2"},
        ),
    ],
)
def test_clean_request_headers(
    fields: list[tuple[str, str]], connection: str | None, expected: dict[str, str]
) -> None:
    assert clean_request_headers(_h(*fields), connection.encode() if connection else None) == expected


@pytest.mark.parametrize(
    ("fields", "connection"),
    [
        ([("Host", "a")], "host"),
        ([("Content-Length", "1")], "close, Content-Length"),
        ([("Content-Type", "a/b"), ("content-type", "c/d")], None),
    ],
)
def test_clean_request_headers_refuses(fields: list[tuple[str, str]], connection: str | None) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        clean_request_headers(_h(*fields), connection.encode() if connection else None)
    assert info.value.status == 400


_NAME = st.sampled_from(
    ["x-forwarded-client-cert", "X_Forwarded_Client_Cert", "FORWARDED", "x-forwarded-for", "x_Forwarded_for",
     "content-type", "x-a", "X_A", "x-b", "upgrade", "x_real_ip", "keep-alive", "te"]
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_NAME, st.sampled_from(["1", "v"])), max_size=8), st.lists(_NAME, max_size=3))
def test_no_mesh_owned_or_nominated_field_survives_in_any_spelling(
    fields: list[tuple[str, str]], nominated: list[str]
) -> None:
    connection = ", ".join(nominated).encode() if nominated else None
    try:
        out = clean_request_headers(_h(*fields), connection)
    except RemoteProtocolError:
        return  # a repeated Content-Type
    dashed = [n.replace("_", "-") for n in out]
    assert not set(dashed) & MESH_OWNED
    assert len(set(dashed)) == len(dashed)  # no two fields a WSGI server would merge
    hop = {"upgrade", "keep-alive", "te"}
    assert not {n.lower() for n in nominated} - hop & set(out)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("websocket", True),
        ("WebSocket ", True),
        ("websocketx", False),
        ("websocket, h2c", False),
        ("h2c", False),
        (None, False),
    ],
)
def test_websocket_upgrade_is_an_exact_token(value: str | None, ok: bool) -> None:
    assert websocket_upgrade(value) is ok


# ---- path normalization vs a decoding server -----------------------------------------------------

_PIECE = st.sampled_from(
    ["a", "admin", "/", "//", ".", "..", "%2F", "%2f", "%5C", "%5c", "%2E", "%2e%2E", "%25", "%252F", "%41", "%7E", "%C3%A9", ";", "x.y"]
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(_PIECE, max_size=14))
def test_what_authz_sees_is_what_a_decoding_server_routes(pieces: list[str]) -> None:
    raw = "/" + "".join(pieces)
    lowered = raw.lower()
    try:
        seen = normalize_path(raw)
    except RemoteProtocolError:
        assert "%2f" in lowered or "%5c" in lowered  # refused only for an encoded separator
        return
    assert "%2f" not in lowered and "%5c" not in lowered
    decoded = unquote(seen)
    # every segment authz matches is exactly one segment of the decoded route
    assert [unquote(s) for s in seen.split("/")] == decoded.split("/")
    assert "\\" not in decoded and "//" not in seen
    assert not {".", ".."} & set(seen.split("/"))
    assert normalize_path(seen) == seen
    decode_mode = normalize_path(raw, "decode")
    assert decode_mode == seen  # no encoded slash: both modes agree


@settings(max_examples=150, deadline=None)
@given(st.lists(_PIECE, max_size=14))
def test_decode_mode_leaves_no_encoded_separator_and_is_stable(pieces: list[str]) -> None:
    seen = normalize_path("/" + "".join(pieces), "decode")
    upper = seen.upper()
    assert "%2F" not in upper and "%5C" not in upper
    assert [unquote(s) for s in seen.split("/")] == unquote(seen).split("/")
    assert not {".", ".."} & set(seen.split("/")) and "//" not in seen
    assert normalize_path(seen, "decode") == seen == normalize_path(seen)


# ---- DLP body decoding -------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_json_encoding_matches_what_json_loads_reads(encoding: str) -> None:
    body = json.dumps({"a": "b"}).encode(encoding)
    expected = {"utf-16": "utf-16", "utf-32": "utf-32"}.get(encoding, encoding)
    assert json_encoding(body) == expected and json.loads(body) == {"a": "b"}


@pytest.mark.parametrize(
    ("body", "is_json"),
    [
        (b'{"a":1}', True),
        (b' \n["x"]', True),
        (b'"str"', True),
        ('{"a":1}'.encode("utf-16"), True),
        (b"4111 1111 1111 1111", False),  # a bare number stays text
        (b"true", False),
        (b"{not json", False),
        (b"", False),
        (b"\xff\xfe\x00", False),
    ],
)
def test_sniff_json(body: bytes, is_json: bool) -> None:
    assert sniff_json(body) is is_json


@pytest.mark.parametrize(
    ("content_type", "charset"),
    [(None, None), ("text/plain", None), ("text/plain; charset=UTF-16", "utf-16"), ('text/plain;charset="latin1"', "iso8859-1"), ("text/plain; charset=nope", "?")],
)  # fmt: skip
def test_declared_charset(content_type: str | None, charset: str | None) -> None:
    assert declared_charset(content_type) == charset


def test_form_fields_decode_like_a_server() -> None:
    body = b"a=x%40y+z&b&=v&c=%zz&d=%4"
    assert [(body[s:e], d) for s, e, d in form_fields(body)] == [
        (b"a", b"a"),
        (b"x%40y+z", b"x@y z"),
        (b"b", b"b"),
        (b"v", b"v"),
        (b"c", b"c"),
        (b"%zz", b"%zz"),
        (b"d", b"d"),
        (b"%4", b"%4"),
    ]


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@settings(max_examples=150, deadline=None)
@given(
    encoding=st.sampled_from(ENCODINGS),
    before=_TEXT,
    after=_TEXT,
    escape=st.booleans(),
    content_type=st.sampled_from([None, "application/json", "text/plain", "application/octet-stream"]),
)
def test_an_email_in_any_json_encoding_or_content_type_is_masked(
    encoding: str, before: str, after: str, escape: bool, content_type: str | None
) -> None:
    doc = {"messages": [{"content": f"{before} {EMAIL} {after}"}], "n": 1}
    text = json.dumps(doc, ensure_ascii=escape)
    if escape:
        text = text.replace("@", "\\u0040")
    body = text.encode(encoding)
    outcome = Outcome()
    out = inspect_body(PLAN, redactor(), body, content_type, None, outcome)
    read = json.loads(out)  # what the app reads
    assert EMAIL not in read["messages"][0]["content"]
    assert "[EMAIL ****]" in read["messages"][0]["content"] and outcome.counts.get("email", 0) >= 1
    assert json_encoding(out) == json_encoding(body)  # re-encoded the way it came


def test_a_value_hidden_behind_a_duplicate_key_is_scanned_and_dropped() -> None:
    body = b'{"content":"mail jane.doe\\u0040example.com","content":"hi"}'
    outcome = Outcome()
    out = inspect_body(PLAN, redactor(), body, "application/json", None, outcome)
    assert EMAIL.encode() not in out.replace(b"\\u0040", b"@") and outcome.counts == {"email": 1}
    assert json.loads(out) == {"content": "hi"}


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/x-www-form-urlencoded", b"to=jane.doe%40example.com&n=1", b"to=%5BEMAIL+%2A%2A%2A%2A%5D&n=1"),
        ("text/plain; charset=utf-16", "to jane.doe@example.com".encode("utf-16"), "to [EMAIL ****]".encode("utf-16")),
        ("application/x-ndjson", b'{"a":"jane.doe\\u0040example.com"}\n{"b":1}\n', b'{"a":"[EMAIL ****]"}\n{"b":1}\n'),
    ],
)  # fmt: skip
def test_forms_charsets_and_ndjson_are_scanned_decoded(
    content_type: str, body: bytes, expected: bytes
) -> None:
    assert inspect_body(PLAN, redactor(), body, content_type, None, Outcome()) == expected


# ---- classification by what the body is ---------------------------------------------------------

_MULTIPART = (
    b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF\r\n'
    b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-x\r\n--b--\r\n'
)


@pytest.mark.parametrize(
    ("content_type", "body", "model"),
    [
        ("text/plain", b'{"model":"m1"}', "m1"),
        ("application/octet-stream", '{"model":"m1"}'.encode("utf-32"), "m1"),
        (None, b'{"model":"m1","model":"m2"}', "m2"),  # the last key, as json.loads reads it
        ("application/x-www-form-urlencoded", b"model=m3&x=1", "m3"),
        ("multipart/form-data; boundary=b", _MULTIPART, "whisper-x"),
        ("text/plain", b"model=m3", None),
    ],
)
def test_the_model_is_read_from_what_the_body_is(
    content_type: str | None, body: bytes, model: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    path = (
        "/v1/audio/transcriptions" if content_type and "multipart" in content_type else "/v1/chat/completions"
    )
    ai = classify("POST", path, headers, body)
    assert ai.model == model
    assert needs_body(classify("POST", path, headers, None), "POST", headers)


@settings(max_examples=100, deadline=None)
@given(
    model=st.text(min_size=1, max_size=20).filter(lambda m: m.strip() == m and m),
    content_type=st.one_of(
        st.none(), st.sampled_from(["text/plain", "application/xml", "image/png", "application/json"])
    ),
    encoding=st.sampled_from(ENCODINGS),
)
def test_any_content_type_reveals_a_json_bodys_model(
    model: str, content_type: str | None, encoding: str
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    body = json.dumps({"model": model, "messages": []}).encode(encoding)
    assert classify("POST", "/v1/chat/completions", headers, body).model == model


# ---- streamed text fields -----------------------------------------------------------------------


def test_streamed_fields_table() -> None:
    chunk = {
        "choices": [
            {
                "index": 1,
                "delta": {"content": "a", "tool_calls": [{"index": 2, "function": {"arguments": "b"}}]},
            }
        ]
    }
    resp = {"type": "response.function_call_arguments.delta", "output_index": 3, "delta": "c"}
    block = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "d"}}
    assert [(k, h[f]) for k, h, f in streamed_fields(chunk)] == [
        (("choice", 1, "content"), "a"),
        (("choice", 1, "tool", 2), "b"),
    ]
    [(key, holder, field)] = streamed_fields(resp)
    assert key[:2] == ("response", "response.function_call_arguments.delta") and holder[field] == "c"
    assert [h[f] for _, h, f in streamed_fields(block)] == ["d"]
    assert streamed_fields({"text_output": "e"})[0][1]["text_output"] == "e"
    assert streamed_fields([1, 2]) == [] and streamed_fields({"choices": "x", "type": 3}) == []


def _responses_event(delta: str) -> bytes:
    doc = {
        "type": "response.output_text.delta",
        "item_id": "m",
        "output_index": 0,
        "content_index": 0,
        "delta": delta,
    }
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


def _tool_event(arguments: str) -> bytes:
    doc = {
        "choices": [
            {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]}}
        ]
    }
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


@settings(max_examples=150, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=5),
    tool=st.booleans(),
    split=st.integers(1, 50),
)
def test_a_value_split_across_any_stream_events_is_masked(cuts: list[int], tool: bool, split: int) -> None:
    text = f"to {EMAIL} thanks"
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(text)}), len(text)]
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    make = _tool_event if tool else _responses_event
    wire = b"".join(make(p) for p in pieces) + b"data: [DONE]\n\n"
    rewriter = SseRewriter(
        plans(policy(action="mask", detectors=["email"]))["response"], redactor(), Outcome(), window=64
    )
    out = b"".join(rewriter.feed(wire[i : i + split]) for i in range(0, len(wire), split)) + rewriter.finish()
    joined = ""
    for event in out.split(b"\n\n"):
        if event.startswith(b"data: {"):
            doc = json.loads(event[6:])
            joined += (
                doc["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] if tool else doc["delta"]
            )
    assert joined == "to [EMAIL ****] thanks"


# ---- found by fuzz/fuzz_dlp_body.py --------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"jane.doe@example.com+jane.doe@example.com", b"[EMAIL ****][EMAIL ****]"),
        (b"a@example.com+b@example.com", b"[EMAIL ****][EMAIL ****]"),
        (b"a@example.com b@example.com", b"[EMAIL ****] [EMAIL ****]"),
    ],
)
def test_a_value_glued_to_another_is_not_hidden_by_the_overlap(body: bytes, expected: bytes) -> None:
    outcome = Outcome()
    out = inspect_body(PLAN, redactor(), body, "text/plain", None, outcome)
    assert out == expected and outcome.counts == {"email": 2}
    assert inspect_body(PLAN, redactor(), out, "text/plain", None, Outcome()) == out


# ---- found by fuzz/fuzz_dlp_stream.py: the result must not depend on how bytes are chunked -------

_GLUED = ["11 1111 1111", "11 1111 1111", "4111 11", "11 1111 1111", "\\u0040", "4111 11"]


def _rewrite(make: type[SseRewriter] | type[TextRewriter], wire: bytes, size: int) -> bytes:
    rewriter = make(
        plans(policy(action="mask", detectors=["credit_card"]))["response"], redactor(), Outcome(), window=32
    )
    return b"".join(rewriter.feed(wire[i : i + size]) for i in range(0, len(wire), size)) + rewriter.finish()


@pytest.mark.parametrize("make", [SseRewriter, TextRewriter])
def test_a_cut_does_not_change_what_a_value_glued_to_earlier_text_is(
    make: type[SseRewriter] | type[TextRewriter],
) -> None:
    if make is SseRewriter:
        wire = b"".join(
            b"data: " + json.dumps({"choices": [{"index": 0, "text": t}]}).encode() + b"\n\n" for t in _GLUED
        )
    else:
        wire = "".join(_GLUED).encode()
    whole = _rewrite(make, wire, len(wire))
    assert all(_rewrite(make, wire, size) == whole for size in (1, 2, 3, 7, 16, 64))


@settings(max_examples=60, deadline=None)
@given(
    pieces=st.lists(
        st.sampled_from(["4111 11", "11 1111 1111", " ok ", "jane.d", "oe@example.com", "x"]), max_size=10
    ),
    size=st.integers(1, 40),
)
def test_streams_are_rewritten_the_same_however_they_are_chunked(pieces: list[str], size: int) -> None:
    wire = b"".join(
        b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": p}}]}).encode() + b"\n\n"
        for p in pieces
    )
    assert _rewrite(SseRewriter, wire, size) == _rewrite(SseRewriter, wire, max(1, len(wire)))
    text = "".join(pieces).encode()
    assert _rewrite(TextRewriter, text, size) == _rewrite(TextRewriter, text, max(1, len(text)))


_ROLE = b'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}\n\n'


def _content_event(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}).encode() + b"\n\n"


@pytest.mark.parametrize("size", [1, 2, 7, 10_000])
def test_a_stream_held_back_by_another_never_releases_its_text_unrewritten(size: int) -> None:
    # a short legacy "text" stream holds the queue while the content stream's window moves on
    # (after a first event that carries no text, as an OpenAI stream's role chunk)
    wire = (
        _ROLE
        + b'data: {"choices": [{"index": 0, "text": "4111 11"}]}\n\n'
        + b"".join(_content_event(t) for t in ["4111 11", "11 1111 1111", " and more words "] * 3)
    )
    out = _rewrite(SseRewriter, wire, size)
    content = "".join(
        json.loads(e[6:])["choices"][0].get("delta", {}).get("content", "")
        for e in out.split(b"\n\n")
        if e.startswith(b"data: {")
    )
    assert "4111 11" not in content.replace("[CARD ****1111]", "") and content.count("[CARD ****1111]") == 3


@pytest.mark.parametrize("size", [1, 3, 10_000])
def test_ollama_ndjson_content_split_across_lines_is_masked(size: int) -> None:
    lines = [{"message": {"content": p}, "done": False} for p in ["to jane.d", "oe@exa", "mple.com ok"]]
    wire = b"".join(json.dumps(line).encode() + b"\n" for line in [*lines, {"done": True}])
    rewriter = NdjsonRewriter(PLAN, redactor(), Outcome(), window=64)
    out = b"".join(rewriter.feed(wire[i : i + size]) for i in range(0, len(wire), size)) + rewriter.finish()
    docs = [json.loads(line) for line in out.splitlines()]
    assert "".join(d.get("message", {}).get("content", "") for d in docs) == "to [EMAIL ****] ok"
    assert len(docs) == 4 and docs[-1] == {"done": True}


def test_a_digit_run_cut_by_the_window_is_not_judged_on_its_prefix() -> None:
    # the fuzzer's input: the window cuts "4244444442222|222222", a 19-digit run that is no
    # card number while its first 13 digits would pass for one
    wire = (
        b"\xb1]E]\xc0]E0\xb1]\xbe\xbd\xfa\x00\x004444442442222222222\xc0\xbe\xbe\x9e\x00\x00\x0044444"
        b"\xff\xcb\xff\x00C2E0\xc0\x00\x00\xff4244444442222222222?\xc0\xbe\xbe\xbe\x00\x00\x00444442"
        b"\xc0\xbe\xbe\xbe\x00\x00\x0044444\x00\x00\x0044444`4222244444422222E0\xc0\xbe\xbe\xbe\x00"
    )
    plan = plans(policy(action="mask", detectors=["credit_card"]))["response"]
    outs = set()
    for size in (1, 5, len(wire)):
        rewriter = TextRewriter(plan, redactor(), Outcome(), window=64)
        outs.add(
            b"".join(rewriter.feed(wire[i : i + size]) for i in range(0, len(wire), size)) + rewriter.finish()
        )
    assert len(outs) == 1 and b"4244444442222222222" in outs.pop()


# ---- found by fuzz/fuzz_dlp_stream.py: events end where the client's parser ends them ----------


@pytest.mark.parametrize("newline", [b"\r", b"\r\n", b"\n"])
@pytest.mark.parametrize("size", [1, 2, 10_000])
def test_sse_events_separated_by_lone_cr_are_events(newline: bytes, size: int) -> None:
    # the SSE spec (and httpx's iter_lines) ends a line at CR alone: a card split across such
    # events must not pass as one unparsable event scanned with its JSON framing in between
    events = [
        b'data: {"choices": [{"index": 0, "delta": {"content": "%s"}}]}' % p
        for p in (b"card 4111 11", b"11 1111 1111 ok")
    ]
    wire = (newline * 2).join([*events, b"data: [DONE]"]) + newline * 2
    out = _rewrite(SseRewriter, wire, size)
    contents = [
        json.loads(e[6:])["choices"][0]["delta"]["content"]
        for e in out.split(b"\n\n")
        if e.startswith(b"data: {")
    ]
    assert "".join(contents) == "card [CARD ****1111] ok"
