"""What must NOT get through: bad TLS peers, impostor servers, smuggling, and what PERMISSIVE allows.

Every refusal is checked at the app too: it counts the requests that reached it.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from meshward.config.snapshot import ServiceEntry
from meshward.identity.authority import Authority, make_intermediate, make_root, pem
from meshward.identity.keys import generate_key, key_pem, write_private, write_public
from tests.proxy.conftest import RecordingApp
from tests.support.sidecar import (
    MeshPair,
    SvidFiles,
    issue_svid,
    make_snapshot,
    mesh_pair,
    session_authority,
    start_sidecar,
    write_bootstrap,
)

pytestmark = pytest.mark.e2e

GET = b"GET /probe HTTP/1.1\r\nHost: chat.llm\r\nConnection: close\r\n\r\n"


def _read_all(s: socket.socket | ssl.SSLSocket, timeout: float = 5) -> bytes:
    buf = b""
    s.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = s.recv(65536)
        except (TimeoutError, ssl.SSLError, ConnectionResetError, BrokenPipeError):
            break
        if not data:
            break
        buf += data
        if b"\r\n\r\n" in buf and buf.rstrip().endswith(b"}"):
            break
    return buf


def _tls_request(addr: tuple[str, int], svid: SvidFiles | None, bundle: Path, request: bytes = GET) -> bytes:
    """Open mTLS with ``svid`` (None: no client certificate), send ``request``, return the reply."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(bundle)
    if svid is not None:
        ctx.load_cert_chain(svid.cert, svid.key)
    try:
        with socket.create_connection(addr, timeout=5) as raw, ctx.wrap_socket(raw) as s:
            s.sendall(request)
            return _read_all(s)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return b""


def _expired_svid(directory: Path, ca: Authority) -> SvidFiles:
    key = generate_key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshward")]))
        .issuer_name(ca.intermediate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=2))
        .not_valid_after(now - dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://demo.local/ns/web/sa/webapp")]
            ),
            critical=True,
        )
        .sign(ca.intermediate_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = SvidFiles(directory / "svid.pem", directory / "svid.key", directory / "bundle.pem", None)  # type: ignore[arg-type]
    write_public(files.cert, pem(cert) + pem(ca.intermediate))
    write_private(files.key, key_pem(key))
    write_public(files.bundle, pem(ca.root))
    return files


def _other_ca() -> Authority:
    root, root_key = make_root("demo.local")
    inter, inter_key = make_intermediate("demo.local", root, root_key)
    return Authority("demo.local", root, inter, inter_key)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SvidFiles]:
    d = tmp_path_factory.mktemp("certs")
    return {
        "good": issue_svid(d / "good", "web/webapp"),
        "wrong_ca": issue_svid(d / "wrong", "web/webapp", _other_ca(), bundle=pem(session_authority().root)),
        "expired": _expired_svid(d / "expired", session_authority()),
    }


# ---- inbound refuses bad peers --------------------------------------------------------------


def test_valid_client_certificate_is_accepted(pair: MeshPair, certs: dict[str, SvidFiles]) -> None:
    """Control for the refusals below: the same harness with a good SVID gets through."""
    reply = _tls_request(pair.server.inbound, certs["good"], certs["good"].bundle)
    assert reply.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("case", ["plaintext", "no_cert", "wrong_ca", "expired"])
def test_inbound_refuses_bad_peers_and_app_sees_nothing(
    case: str, pair: MeshPair, app: RecordingApp, certs: dict[str, SvidFiles]
) -> None:
    before = app.count()
    if case == "plaintext":
        with socket.create_connection(pair.server.inbound, timeout=5) as s:
            s.sendall(GET)
            reply = _read_all(s)
    else:
        svid = None if case == "no_cert" else certs[case]
        reply = _tls_request(pair.server.inbound, svid, certs["good"].bundle)
    assert b"HTTP/" not in reply
    assert app.count() == before


def _s_client(addr: tuple[str, int], bundle: Path, cert: SvidFiles | None, tmp: Path) -> str:
    args = ["openssl", "s_client", "-connect", f"{addr[0]}:{addr[1]}", "-CAfile", str(bundle), "-quiet"]
    if cert is not None:
        chain = cert.cert.read_bytes()
        split = chain.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----\n")
        (tmp / "leaf.pem").write_bytes(chain[:split])
        (tmp / "inter.pem").write_bytes(chain[split:])
        args += ["-cert", str(tmp / "leaf.pem"), "-cert_chain", str(tmp / "inter.pem"), "-key", str(cert.key)]
    out = subprocess.run(args, input=GET + b"", capture_output=True, timeout=15)
    return out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")


@pytest.mark.parametrize("case", ["good", "no_cert", "wrong_ca", "expired"])
def test_openssl_s_client(
    case: str, pair: MeshPair, app: RecordingApp, certs: dict[str, SvidFiles], tmp_path: Path
) -> None:
    before = app.count()
    text = _s_client(
        pair.server.inbound, certs["good"].bundle, None if case == "no_cert" else certs[case], tmp_path
    )
    if case == "good":
        assert "HTTP/1.1 200" in text
        assert app.count() == before + 1
    else:
        assert "HTTP/1.1" not in text
        assert "verify return:1" in text  # the client did verify the server: the server refused
        assert app.count() == before


# ---- outbound refuses impostor servers ------------------------------------------------------


def test_outbound_refuses_a_server_with_the_wrong_spiffe_id(
    pair: MeshPair, app: RecordingApp, tmp_path: Path
) -> None:
    """The server holds a valid SVID, but for llm/chat, while this client's service table says
    the service must be served by ml/fraud-model: the client sidecar refuses the server."""
    before = app.count()
    entry = ServiceEntry(
        "fraud-model",
        "ml",
        (f"127.0.0.1:{pair.server.inbound_port}",),
        ("spiffe://demo.local/ns/ml/sa/fraud-model",),
    )
    boot = write_bootstrap(
        tmp_path / "client.json",
        issue_svid(tmp_path / "svid", "web/webapp"),
        make_snapshot("web/webapp", services=[entry], mesh={"defaultPolicy": "allow"}),
    )
    client = start_sidecar(boot, "impostor-client")
    try:
        r = httpx.get("http://fraud-model.ml/x", proxy=client.proxy_url, timeout=10, trust_env=False)
        assert r.status_code == 502
        doc = r.json()
        assert "identity mismatch" in doc["error"]
        assert "spiffe://demo.local/ns/llm/sa/chat" in doc["error"] and doc["request_id"]
        stats = httpx.get(f"{client.admin_url}/stats/prometheus", timeout=5).text
        assert 'flags="UIM"' in stats
    finally:
        client.stop()
    assert app.count() == before


# ---- smuggling: 400 and never forwarded -----------------------------------------------------

SMUGGLING = {
    "cl_te": b"POST {t} HTTP/1.1\r\nHost: chat.llm\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "dup_cl": b"POST {t} HTTP/1.1\r\nHost: chat.llm\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
    "bad_cl": b"POST {t} HTTP/1.1\r\nHost: chat.llm\r\nContent-Length: 3x\r\n\r\nabc",
    "te_not_chunked": b"POST {t} HTTP/1.1\r\nHost: chat.llm\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te_http10": b"POST {t} HTTP/1.0\r\nHost: chat.llm\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad_chunk": b"POST {t} HTTP/1.1\r\nHost: chat.llm\r\nTransfer-Encoding: chunked\r\n\r\n5x\r\nabcde\r\n0\r\n\r\n",
    "obs_fold": b"GET {t} HTTP/1.1\r\nHost: chat.llm\r\nX-A: 1\r\n  continued\r\n\r\n",
    "bare_cr": b"GET {t} HTTP/1.1\r\nHost: chat.llm\r\nX-A: 1\r2\r\n\r\n",
    "bare_lf": b"GET {t} HTTP/1.1\nHost: chat.llm\n\n",
    "bad_method": b"G(T {t} HTTP/1.1\r\nHost: chat.llm\r\n\r\n",
    "bad_target": b"GET {t}/a b HTTP/1.1\r\nHost: chat.llm\r\n\r\n",
    "two_hosts": b"GET {t} HTTP/1.1\r\nHost: chat.llm\r\nHost: evil.llm\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(SMUGGLING))
def test_smuggling_via_outbound_is_400(case: str, pair: MeshPair, app: RecordingApp) -> None:
    before = app.count()
    data = SMUGGLING[case].replace(b"{t}", b"http://chat.llm/s")
    with socket.create_connection(pair.client.outbound, timeout=5) as s:
        s.sendall(data)
        reply = _read_all(s)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:100]
    body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert body["error"] and body["request_id"]
    assert app.count() == before


@pytest.mark.parametrize("case", sorted(SMUGGLING))
def test_smuggling_at_inbound_over_mtls_is_400(
    case: str, pair: MeshPair, app: RecordingApp, certs: dict[str, SvidFiles]
) -> None:
    before = app.count()
    data = SMUGGLING[case].replace(b"{t}", b"/s")
    reply = _tls_request(pair.server.inbound, certs["good"], certs["good"].bundle, data)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:100]
    assert app.count() == before


def test_smuggled_second_request_is_not_forwarded(pair: MeshPair, app: RecordingApp) -> None:
    """A classic CL.TE attack: nothing after the refused head may become a request."""
    before = app.count()
    attack = (
        b"POST http://chat.llm/a HTTP/1.1\r\nHost: chat.llm\r\nContent-Length: 44\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET http://chat.llm/admin HTTP/1.1\r\nHost: chat.llm\r\n\r\n"
    )
    with socket.create_connection(pair.client.outbound, timeout=5) as s:
        s.sendall(attack)
        reply = _read_all(s)
    assert reply.count(b"HTTP/1.1 ") == 1 and reply.startswith(b"HTTP/1.1 400")
    assert app.count() == before


# ---- PERMISSIVE, timeouts, dead app ----------------------------------------------------------


@pytest.fixture(scope="module")
def permissive(app: RecordingApp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshPair]:
    with mesh_pair(
        tmp_path_factory.mktemp("permissive"),
        app.port,
        default_policy="allow",
        mtls="PERMISSIVE",
        server_options={"request_timeout": 1},
    ) as p:
        yield p


def test_permissive_accepts_plaintext_without_identity(permissive: MeshPair) -> None:
    host, port = permissive.server.inbound
    r = httpx.get(f"http://{host}:{port}/plain", timeout=10, trust_env=False)
    assert r.status_code == 200
    seen = r.json()["headers"]
    assert "x-forwarded-client-cert" not in seen
    assert seen["x-forwarded-proto"] == "http"
    # and mTLS still works on the same port
    r = httpx.get(f"{permissive.service_url}/tls", proxy=permissive.proxy_url, timeout=10, trust_env=False)
    assert r.status_code == 200 and "x-forwarded-client-cert" in r.json()["headers"]


def test_slow_app_is_504(permissive: MeshPair) -> None:
    r = httpx.get(
        f"{permissive.service_url}/slow?s=4", proxy=permissive.proxy_url, timeout=10, trust_env=False
    )
    assert r.status_code == 504
    assert r.json()["error"].startswith("upstream request timeout")


def test_dead_app_is_503(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # bound, never listening: connections are refused
        boot = write_bootstrap(
            tmp_path / "server.json",
            issue_svid(tmp_path / "svid", "llm/chat"),
            make_snapshot("llm/chat", mesh={"defaultPolicy": "allow"}),
            app=f"127.0.0.1:{dead_port}",
            mtls="PERMISSIVE",
        )
        server = start_sidecar(boot, "dead-app")
        try:
            r = httpx.get(f"http://127.0.0.1:{server.inbound_port}/x", timeout=10, trust_env=False)
        finally:
            server.stop()
    assert r.status_code == 503
    assert r.json()["error"].startswith("upstream connect error")
