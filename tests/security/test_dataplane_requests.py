"""Request-side attacks against a real sidecar pair and a recording app (issue 12: 2, 3, 5, 11).

Each test performs the attack, shows it refused or neutralized, and reads the app's log to show
the forbidden thing never reached it. A control request next to each shows the test can fail.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.security.attack import Recorder, denials, raw_request
from tests.support.sidecar import MeshPair

pytestmark = pytest.mark.e2e

EMAIL = "jane.doe@example.com"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


def _marker() -> str:
    return uuid.uuid4().hex[:12]


def _post(pair: MeshPair, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    with pair.http_client(timeout=20) as client:
        return client.post(f"{pair.service_url}{path}", content=body, headers=headers)


def _chat(content: str, model: str = "tiny") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}]}


def _seen(app: Recorder, marker: str) -> list[str]:
    [record] = app.records(marker)
    strings: list[str] = record["strings"]
    return strings


# ---- finding 2: request DLP bypasses ---------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-be"])
def test_json_in_utf16_or_utf32_is_scanned_as_the_app_decodes_it(
    pair: MeshPair, app: Recorder, encoding: str
) -> None:
    t = _marker()
    body = json.dumps(_chat(f"mail {EMAIL} now")).encode(encoding)
    r = _post(pair, f"/v1/chat/completions?t={t}", body, {"content-type": "application/json"})
    assert r.status_code == 200, r.text
    seen = _seen(app, t)
    assert "mail [EMAIL ****] now" in seen and not any(EMAIL in s for s in seen)


def test_a_secret_in_utf32_json_is_refused_and_never_reaches_the_app(pair: MeshPair, app: Recorder) -> None:
    t = _marker()
    body = json.dumps(_chat(f"key {AWS_KEY}")).encode("utf-32")
    r = _post(pair, f"/v1/chat/completions?t={t}", body, {"content-type": "application/json"})
    assert r.status_code == 403 and r.json()["policy"] == "llm/secrets"
    assert app.records(t) == []


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b'{"messages":[{"content":"mail jane.doe\\u0040example.com now"}]}'),
        (None, b'{"messages":[{"content":"mail jane.doe\\u0040example.com now"}]}'),
        ("application/octet-stream", b'{"messages":[{"content":"mail jane.doe\\u0040example.com now"}]}'),
        (
            "application/x-ndjson",
            b'{"a":1}\n{"messages":[{"content":"mail jane.doe\\u0040example.com now"}]}\n',
        ),
    ],
)
def test_escaped_json_behind_another_content_type_is_sniffed_and_decoded(
    pair: MeshPair, app: Recorder, content_type: str | None, body: bytes
) -> None:
    t = _marker()
    r = _post(
        pair, f"/v1/chat/completions?t={t}", body, {"content-type": content_type} if content_type else {}
    )
    assert r.status_code == 200, r.text
    [record] = app.records(t)
    assert EMAIL not in record["body"].replace("\\u0040", "@")
    assert "[EMAIL ****]" in record["body"]


def test_a_urlencoded_form_is_scanned_percent_decoded(pair: MeshPair, app: Recorder) -> None:
    t = _marker()
    body = b"note=mail+jane.doe%40example.com+now&x=1"
    r = _post(pair, f"/submit?t={t}", body, {"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    [record] = app.records(t)
    assert "%40example" not in record["body"] and "x=1" in record["body"]


def test_text_in_a_declared_utf16_charset_is_scanned_decoded(pair: MeshPair, app: Recorder) -> None:
    t = _marker()
    body = f"mail {EMAIL} now".encode("utf-16")
    r = _post(pair, f"/notes?t={t}", body, {"content-type": "text/plain; charset=utf-16"})
    assert r.status_code == 200, r.text
    [record] = app.records(t)
    received = record["body"].encode("latin-1").decode("utf-16")
    assert received == "mail [EMAIL ****] now"


def test_connection_nominated_headers_are_gone_before_any_filter_sees_them(
    pair: MeshPair, app: Recorder
) -> None:
    t = _marker()
    body = b'{"messages":[{"content":"mail jane.doe\\u0040example.com now"}]}'
    request = (
        f"POST /v1/chat/completions?t={t} HTTP/1.1\r\nHost: chat.llm\r\n"
        "Content-Type: application/json\r\nConnection: close, content-type\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    reply = raw_request(pair, request)
    assert reply.status == 200, reply.head
    [record] = app.records(t)
    assert "content-type" not in {k.lower() for k, _ in record["headers"]}  # what filters saw too
    assert "[EMAIL ****]" in record["body"] and "\\u0040" not in record["body"]


def test_connection_may_not_nominate_host(pair: MeshPair, app: Recorder) -> None:
    t = _marker()
    reply = raw_request(
        pair, f"GET /v1/models?t={t} HTTP/1.1\r\nHost: chat.llm\r\nConnection: host\r\n\r\n".encode()
    )
    assert reply.status == 400
    assert app.records(t) == []


# ---- finding 3: encoded slashes ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/admin%2Fusers",
        "/admin%2fusers",
        "/public/..%2F..%2Fadmin/users",
        "/admin%5Cusers",
        "/v2/repository%2Fmodels%2Ffraud%2Fload",
    ],
)
def test_encoded_slashes_are_refused_with_400(pair: MeshPair, app: Recorder, path: str) -> None:
    t = _marker()
    url = httpx.URL(f"{pair.service_url}/").copy_with(raw_path=f"{path}?t={t}".encode())
    with pair.http_client(timeout=20) as client:
        r = client.post(url, content=b"{}")
        assert r.status_code == 400, r.text
        before = denials(pair, "llm/no-admin-path")
        control = client.post(f"{pair.service_url}/admin/users?t={t}", content=b"{}")
    assert control.status_code == 403  # what the decoding app would have routed: denied
    assert denials(pair, "llm/no-admin-path") == before + 1
    assert app.records(t) == []


# ---- finding 5: the model behind a non-JSON Content-Type ----------------------------------------


@pytest.mark.parametrize(
    ("content_type", "encoding"),
    [("text/plain", "utf-8"), (None, "utf-16"), ("application/octet-stream", "utf-8")],
)
def test_a_denied_model_behind_another_content_type_is_denied(
    pair: MeshPair, app: Recorder, content_type: str | None, encoding: str
) -> None:
    t = _marker()
    headers = {"content-type": content_type} if content_type else {}
    denied = json.dumps(_chat("hi", model="denied-model")).encode(encoding)
    allowed = json.dumps(_chat("hi", model="tiny")).encode(encoding)
    before = denials(pair, "llm/no-denied-model")
    r = _post(pair, f"/v1/chat/completions?t={t}", denied, headers)
    assert r.status_code == 403 and denials(pair, "llm/no-denied-model") == before + 1
    assert app.records(t) == []
    assert _post(pair, f"/v1/chat/completions?t={t}", allowed, headers).status_code == 200


def test_a_rate_limit_keyed_by_model_applies_behind_another_content_type(
    pair: MeshPair, app: Recorder
) -> None:
    t = _marker()
    body = json.dumps(_chat("hi", model="limited-model")).encode()
    first = _post(pair, f"/v1/chat/completions?t={t}", body, {"content-type": "text/plain"})
    second = _post(pair, f"/v1/chat/completions?t={t}", body, {"content-type": "text/plain"})
    assert (first.status_code, second.status_code) == (200, 429), second.text
    assert len(app.records(t)) == 1


def test_a_denied_model_in_a_multipart_upload_is_denied(pair: MeshPair, app: Recorder) -> None:
    t = _marker()
    before = denials(pair, "llm/no-denied-model")
    with pair.http_client(timeout=20) as client:
        r = client.post(
            f"{pair.service_url}/v1/audio/transcriptions?t={t}",
            data={"model": "denied-model"},
            files={"file": ("a.wav", b"RIFF....WAVE", "audio/wav")},
        )
    assert r.status_code == 403  # authz decided (not the DLP's failMode for an uninspectable body):
    assert denials(pair, "llm/no-denied-model") == before + 1
    assert app.records(t) == []


# ---- finding 11: mesh-owned headers, upgrades, replays --------------------------------------------


def test_forged_identity_and_forwarding_headers_never_reach_the_app(pair: MeshPair, app: Recorder) -> None:
    t = _marker()
    forged = "By=spiffe://demo.local/ns/llm/sa/chat;URI=spiffe://demo.local/ns/kube-system/sa/root"
    request = (
        f"GET /v1/models?t={t} HTTP/1.1\r\nHost: chat.llm\r\nConnection: close\r\n"
        f"X_Forwarded_Client_Cert: {forged}\r\nX-FORWARDED-CLIENT-CERT: {forged}\r\n"
        f"x_forwarded_client_cert: {forged}\r\nX-Forwarded-For: 10.9.9.9\r\nX_Forwarded_For: 10.9.9.9\r\n"
        "Forwarded: for=10.9.9.9\r\nX-Real-IP: 10.9.9.9\r\nX_Custom_Flag: kept\r\n\r\n"
    ).encode()
    reply = raw_request(pair, request)
    assert reply.status == 200, reply.head
    [record] = app.records(t)
    fields = [(k.lower().replace("_", "-"), v) for k, v in record["headers"]]
    xfcc = [v for k, v in fields if k == "x-forwarded-client-cert"]
    assert len(xfcc) == 1 and "ns/web/sa/webapp" in xfcc[0] and "kube-system" not in xfcc[0]
    assert not [k for k, _ in fields if k in ("x-forwarded-for", "forwarded", "x-real-ip")]
    assert ("x-custom-flag", "kept") in fields  # an underscore name that collides with nothing


@pytest.mark.parametrize("upgrade", ["websocketx", "websocket, h2c", "h2c", "xwebsocket"])
def test_an_upgrade_other_than_exactly_websocket_is_refused(
    pair: MeshPair, app: Recorder, upgrade: str
) -> None:
    t = _marker()
    request = f"GET /ws?t={t} HTTP/1.1\r\nHost: chat.llm\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n\r\n"
    reply = raw_request(pair, request.encode())
    assert reply.status == 400
    assert app.records(t) == []


def test_a_switch_to_another_protocol_than_asked_opens_no_tunnel(pair: MeshPair, app: Recorder) -> None:
    t = _marker()
    request = f"GET /ws?t={t} HTTP/1.1\r\nHost: chat.llm\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    reply = raw_request(pair, request.encode())
    assert reply.status == 502 and b"RAW" not in reply.body
    assert len(app.records(t)) == 1


def test_an_unrequested_101_opens_no_tunnel(pair: MeshPair, app: Recorder) -> None:
    t = _marker()
    reply = raw_request(
        pair, f"GET /switch?t={t} HTTP/1.1\r\nHost: chat.llm\r\nConnection: close\r\n\r\n".encode()
    )
    assert reply.status == 502 and b"RAW" not in reply.body and EMAIL.encode() not in reply.body


def test_a_post_is_never_replayed_after_an_upstream_reset(pair: MeshPair, app: Recorder) -> None:
    with pair.http_client(timeout=20) as client:
        for method, expected_copies in (("POST", 1), ("GET", 2)):  # GET: idempotent, replayed once
            t = _marker()
            assert client.get(f"{pair.service_url}/warm?t={t}").status_code == 200  # a pooled app conn
            r = client.request(method, f"{pair.service_url}/reset?t={t}", content=b"charge once")
            assert r.status_code == 502
            assert len([x for x in app.records(t) if x["route"] == "/reset"]) == expected_copies, method
