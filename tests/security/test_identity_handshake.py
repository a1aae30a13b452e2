"""Findings 9 and 11 at the handshake, against a real control plane and a real sidecar process:
a revoked SVID (by serial, or every SVID of an identity) is refused on its next connection —
by the sidecar and by the control plane — and so is a "leaf" with CA:TRUE or keyCertSign."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from meshward.control.client import ControlRefused
from meshward.identity.keys import generate_key, key_pem, write_private, write_public
from tests.security.controlled_mesh import CHAT_FOR_WEBAPP, ControlledMesh, MeshSidecar, controlled_mesh
from tests.support.models import example_model
from tests.support.proc import PYTHON, ROOT, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlledMesh, MeshSidecar]]:
    base = tmp_path_factory.mktemp("handshake")
    with example_model(base, "examples.models.chat") as port, controlled_mesh(base, CHAT_FOR_WEBAPP) as m:
        yield m, m.sidecar("llm/chat", app_port=port)


def _call(mesh: ControlledMesh, sidecar: MeshSidecar, svid: Path) -> int | str:
    """One request on a NEW mTLS connection straight to the sidecar's inbound: status or "refused"."""
    host, port = sidecar.inbound
    body = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}]}
    try:
        with httpx.Client(verify=mesh.tls_as(svid), trust_env=False, timeout=10) as http:
            return http.post(f"https://{host}:{port}/v1/chat/completions", json=body).status_code
    except httpx.TransportError:
        return "refused"


def _revoke(mesh: ControlledMesh, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "meshward", "certs", "revoke", *args, "--state", str(mesh.state.path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_revoked_svid_is_refused_at_the_next_handshake(mesh: tuple[ControlledMesh, MeshSidecar]) -> None:
    m, chat = mesh
    issued, svid = m.mint("web/webapp")
    assert _call(m, chat, svid) == 200
    with m.client_as(svid) as client:
        client.request("GET", "/v1/watch?workload=web/webapp&timeout=0")
    # a connection left open across the revocation
    host, port = chat.inbound
    opened = m.tls_as(svid).wrap_socket(socket.create_connection((host, port), timeout=10))
    opened.sendall(b"GET /health HTTP/1.1\r\nHost: chat.llm\r\n\r\n")
    assert opened.recv(100).startswith(b"HTTP/1.1 ")

    done = _revoke(m, issued.serial)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: _call(m, chat, svid) == "refused", 20, interval=0.2, what="the sidecar to refuse it")
    opened.settimeout(10)
    try:
        while opened.recv(65536):  # the rest of the answer, then the sidecar's close
            pass
    except (ConnectionResetError, ssl.SSLError):
        pass
    opened.close()
    with m.client_as(svid) as client, pytest.raises(ControlRefused) as refused:
        client.request("GET", "/v1/watch?workload=web/webapp&timeout=0")
    assert refused.value.status == 403 and "revoked" in str(refused.value)

    # revoke by identity: every unexpired SVID of web/webapp, the one still working included
    second, svid2 = m.mint("web/webapp")
    assert _call(m, chat, svid2) == 200
    done = _revoke(m, "--id", "web/webapp", "--json")
    assert done.returncode == 0 and second.serial in json.loads(done.stdout)["revoked"]
    wait_for(lambda: _call(m, chat, svid2) == "refused", 20, interval=0.2, what="revoke-by-identity")
    assert 'meshward_proxy_tls_refused_total{reason="peer_identity"}' in chat.metrics()


def _ca_like_leaf(m: ControlledMesh, out: Path, ca: bool, key_cert_sign: bool) -> Path:
    """A certificate for web/webapp signed by the mesh's own issuing CA, but CA:TRUE or keyCertSign."""
    authority = m.state.load_authority()
    key = generate_key()
    now = dt.datetime.now(dt.UTC)
    usage = dict.fromkeys(
        ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "crl_sign"), False
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(authority.intermediate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=key_cert_sign,
                encipher_only=False,
                decipher_only=False,
                **usage,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://demo.local/ns/web/sa/webapp")]
            ),
            critical=True,
        )
        .sign(authority.intermediate_key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    write_private(out / "key.pem", key_pem(key))
    write_public(out / "cert.pem", authority.chain_pem(leaf))
    return out


@pytest.mark.parametrize(("ca", "key_cert_sign"), [(False, True), (True, True)])
def test_a_leaf_that_can_sign_certificates_is_refused(
    mesh: tuple[ControlledMesh, MeshSidecar], tmp_path: Path, ca: bool, key_cert_sign: bool
) -> None:
    m, chat = mesh
    svid = _ca_like_leaf(m, tmp_path / "ca-leaf", ca, key_cert_sign)
    assert _call(m, chat, svid) == "refused"
    with m.client_as(svid) as client, pytest.raises(ControlRefused) as refused:
        client.request("GET", "/v1/watch?workload=web/webapp&timeout=0")
    assert refused.value.status == 401  # the chain is the mesh's own: only the leaf's extensions fail it


def test_a_client_sidecar_refuses_a_server_whose_svid_is_revoked(
    mesh: tuple[ControlledMesh, MeshSidecar],
) -> None:
    m, _ = mesh
    webapp = m.sidecar("web/webapp")
    body = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}]}

    def status() -> int:
        with httpx.Client(proxy=webapp.proxy_url, trust_env=False, timeout=10) as http:
            return http.post("http://chat.llm/v1/chat/completions", json=body).status_code

    assert wait_for(lambda: status() == 200, 20, what="chat through the client sidecar")
    done = _revoke(m, "--id", "llm/chat")  # the server's own SVID: the outbound check must refuse it
    assert done.returncode == 0, done.stderr
    assert wait_for(lambda: status() == 502, 20, interval=0.2, what="the client sidecar to refuse (UIM)")
