"""Real clients through a real sidecar pair (curl, httpx, the openai SDK via HTTP_PROXY)."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import httpx
import pytest

from tests.proxy.conftest import RecordingApp
from tests.support.sidecar import MeshPair

pytestmark = pytest.mark.e2e


def _raw(pair: MeshPair, data: bytes, until: bytes = b"\r\n\r\n", timeout: float = 5) -> bytes:
    with socket.create_connection(pair.client.outbound, timeout=timeout) as s:
        s.sendall(data)
        return _read_until(s, until, timeout)


def _read_until(s: socket.socket, marker: bytes, timeout: float = 5) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while marker not in buf and time.monotonic() < deadline:
        try:
            data = s.recv(65536)
        except TimeoutError:
            break
        if not data:
            break
        buf += data
    return buf


def test_curl_get_arrives_unchanged_with_peer_identity(pair: MeshPair, app: RecordingApp) -> None:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-x",
            pair.proxy_url,
            f"{pair.service_url}/echo/a?q=1",
            "-H",
            "X-Forwarded-Client-Cert: By=spiffe://evil;URI=spiffe://demo.local/ns/llm/sa/admin",
        ],
        capture_output=True,
        text=True,
        timeout=15,
        check=True,
    ).stdout
    seen = json.loads(out)
    assert seen["method"] == "GET" and seen["path"] == "/echo/a?q=1"
    assert seen["headers"]["host"] == "chat.llm"
    xfcc = seen["headers"]["x-forwarded-client-cert"]
    parts = dict(p.split("=", 1) for p in xfcc.split(";"))
    assert parts["By"] == pair.server_id.uri
    assert parts["URI"] == pair.client_id.uri
    assert len(parts["Hash"]) == 64 and "evil" not in xfcc  # the forged header was stripped
    assert seen["headers"]["x-request-id"]


def test_curl_post_body_and_path_normalization(pair: MeshPair) -> None:
    body = b"x" * 50_000
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--path-as-is",
            "-x",
            pair.proxy_url,
            f"{pair.service_url}/a/%2e%2e//b/./c",
            "--data-binary",
            "@-",
        ],
        input=body,
        capture_output=True,
        timeout=15,
        check=True,
    ).stdout
    seen = json.loads(out)
    assert seen["path"] == "/b/c"  # normalized by the inbound sidecar before anything else
    assert seen["body_len"] == len(body)


def test_httpx_methods_statuses_and_chunked_upload(pair: MeshPair) -> None:
    with pair.http_client() as c:
        r = c.put(f"{pair.service_url}/p?status=201", content=b"abc")
        assert r.status_code == 201 and r.json()["body_len"] == 3
        r = c.head(f"{pair.service_url}/h")
        assert r.status_code == 200 and r.content == b""
        r = c.post(f"{pair.service_url}/chunked", content=iter([b"a" * 1000, b"b" * 2000]))
        seen = r.json()
        assert seen["body_len"] == 3000 and seen["headers"]["transfer-encoding"] == "chunked"
        r = c.delete(f"{pair.service_url}/missing?status=404")
        assert r.status_code == 404


def test_keep_alive_reuses_connections(pair: MeshPair, app: RecordingApp) -> None:
    def gauge(url: str, name: str) -> float:
        text = httpx.get(f"{url}/stats/prometheus", timeout=5).text
        line = next(ln for ln in text.splitlines() if ln.startswith(name + " "))
        return float(line.split()[1])

    before_client = gauge(pair.client.admin_url, "meshward_proxy_upstream_connects")
    before_server = gauge(pair.server.admin_url, "meshward_proxy_upstream_connects")
    with pair.http_client() as c:
        for i in range(10):
            assert c.get(f"{pair.service_url}/ka/{i}").status_code == 200
    # sequential requests: at most one new mTLS connection and one new app connection
    assert gauge(pair.client.admin_url, "meshward_proxy_upstream_connects") - before_client <= 1
    assert gauge(pair.server.admin_url, "meshward_proxy_upstream_connects") - before_server <= 1


def test_openai_sdk_through_http_proxy(pair: MeshPair, monkeypatch: pytest.MonkeyPatch) -> None:
    openai = pytest.importorskip("openai")
    for k, v in pair.proxy_env().items():
        monkeypatch.setenv(k, v)
    client = openai.OpenAI(base_url=f"{pair.service_url}/v1", api_key="unused", max_retries=0, timeout=10)
    assert [m.id for m in client.models.list()] == ["tiny"]
    done = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.content == "Hello from the mesh"
    stream = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert pieces == ["Hello", " from", " the", " mesh"]


def test_sse_arrives_event_by_event(pair: MeshPair, app: RecordingApp) -> None:
    """The app sends one event, then waits for the test: each event must arrive before the next
    is even produced, so nothing on the path may buffer."""
    with pair.http_client() as c, c.stream("GET", f"{pair.service_url}/sse?n=3") as r:
        assert r.headers["content-type"] == "text/event-stream"
        lines = r.iter_lines()
        got = []
        for i in range(3):
            line = next(lines)
            while not line:
                line = next(lines)
            got.append(line)
            assert line == f"data: token-{i}"
            if i < 2:
                app.release()
        assert got == ["data: token-0", "data: token-1", "data: token-2"]


def test_expect_100_continue_is_relayed_before_the_body(pair: MeshPair) -> None:
    head = (
        b"POST http://chat.llm/upload HTTP/1.1\r\nHost: chat.llm\r\nContent-Length: 5\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    with socket.create_connection(pair.client.outbound, timeout=5) as s:
        s.sendall(head)
        interim = _read_until(s, b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        s.sendall(b"hello")
        final = _read_until(s, b'"body_sha256"')
    assert b" 200 " in final.split(b"\r\n", 1)[0]
    assert b'"body_len": 5' in final


def test_curl_expect_100_continue(pair: MeshPair) -> None:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-i",
            "--max-time",
            "10",
            "-x",
            pair.proxy_url,
            "-H",
            "Expect: 100-continue",
            f"{pair.service_url}/up",
            "--data-binary",
            "@-",
        ],
        input=b"y" * 2048,
        capture_output=True,
        timeout=15,
        check=True,
    ).stdout
    assert out.startswith(b"HTTP/1.1 100 Continue")
    assert b'"body_len": 2048' in out


def test_websocket_upgrade_is_passed_through(pair: MeshPair) -> None:
    with socket.create_connection(pair.client.outbound, timeout=5) as s:
        s.sendall(
            b"GET http://chat.llm/ws HTTP/1.1\r\nHost: chat.llm\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        head = _read_until(s, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        for payload in (b"\x81\x05hello", b"\x82\x03\x00\x01\x02"):
            s.sendall(payload)
            assert _read_until(s, payload) == payload


def test_oversized_header_is_431(pair: MeshPair, app: RecordingApp) -> None:
    before = app.count()
    with pair.http_client() as c:
        r = c.get(f"{pair.service_url}/big", headers={"x-big": "a" * 20_000})
    assert r.status_code == 431
    assert r.json()["error"] and r.json()["request_id"]
    assert app.count() == before


def test_oversized_body_is_413_and_nothing_reaches_the_app(pair: MeshPair, app: RecordingApp) -> None:
    before = app.count()
    with pair.http_client() as c:
        r = c.post(f"{pair.service_url}/big", content=b"z" * 200_000)
        assert r.status_code == 413
        assert r.json()["error"].startswith("request body larger than")
    assert app.count() == before


def test_unknown_service_is_403_registry_only(pair: MeshPair, app: RecordingApp) -> None:
    before = app.count()
    with pair.http_client() as c:
        r = c.get("http://nowhere.ml/x")
    assert r.status_code == 403
    doc = r.json()
    assert doc["host"] == "nowhere.ml" and "REGISTRY_ONLY" in doc["error"] and doc["request_id"]
    assert app.count() == before


def test_same_namespace_short_name_and_host_header_form(pair: MeshPair) -> None:
    # origin-form with a Host header (what a transparently redirected client would send)
    reply = _raw(
        pair, b"GET /hostform HTTP/1.1\r\nHost: chat.llm.svc.cluster.local\r\n\r\n", b'"body_sha256"'
    )
    assert reply.startswith(b"HTTP/1.1 200")
    # the client lives in namespace "web": a bare "chat" is web's chat, which does not exist
    reply = _raw(pair, b"GET http://chat/x HTTP/1.1\r\nHost: chat\r\n\r\n", b"}")
    assert reply.startswith(b"HTTP/1.1 403")


def test_connect_is_refused(pair: MeshPair) -> None:
    reply = _raw(pair, b"CONNECT chat.llm:443 HTTP/1.1\r\nHost: chat.llm:443\r\n\r\n", b"}")
    assert reply.startswith(b"HTTP/1.1 405")
