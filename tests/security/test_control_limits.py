"""Finding 8: unauthenticated growth and slow clients, against a real control plane over TLS.

``/v1/identity/sign`` needs no certificate. An attacker may send huge CSRs (a 1.35 MB one used
to store a 2 MB reason), refused requests by the thousand, or connections that never finish
their request. Each is bounded now: 413 before parsing, reasons cut, refusals rate-limited per
source (429, nothing more recorded), slow clients cut off after the header timeout."""

from __future__ import annotations

import socket
import sqlite3
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from meshward.control.client import ControlClient, ControlRefused, ControlUnavailable
from meshward.control.limits import MAX_REASON, REFUSALS_PER_MINUTE
from meshward.identity.keys import generate_key
from meshward.identity.ledger import MAX_REFUSAL_TEXT, MAX_REFUSALS, SvidLedger
from tests.security.controlled_mesh import ControlledMesh, controlled_mesh

pytestmark = pytest.mark.e2e


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[ControlledMesh]:
    with controlled_mesh(tmp_path, "", header_timeout=1.0) as m:
        yield m


def _anonymous(mesh: ControlledMesh) -> ControlClient:
    return ControlClient(mesh.plane.url, "demo.local", mesh.state.bundle_pem())


def _csr(uri: str) -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
        .sign(generate_key(), hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _status(client: ControlClient, body: dict[str, str]) -> int | str:
    try:
        return client.request("POST", "/v1/identity/sign", body)[0]
    except ControlRefused as exc:
        return exc.status
    except ControlUnavailable:  # answered 413 and closed while the body was still being sent
        return "closed"


def test_huge_csrs_are_refused_before_parsing_and_nothing_is_stored(mesh: ControlledMesh) -> None:
    huge = _csr("spiffe://demo.local/ns/web/sa/" + "a" * 1_400_000)  # the reviewer's 1.35 MB CSR
    # One connection per attempt: the server closes a connection whose body it refused unread,
    # so a second request on it would only see that close.
    with _anonymous(mesh) as client:
        assert _status(client, {"csr": huge, "token": "t"}) in (413, "closed")
    with _anonymous(mesh) as client:
        assert _status(client, {"csr": _csr("spiffe://demo.local/ns/web/sa/x"), "token": "t" * 10_000}) == 413
    with _anonymous(mesh) as client:  # under the cap but a long claimed identity: refused, stored short
        assert (
            _status(client, {"csr": _csr("spiffe://demo.local/ns/web/sa/" + "b" * 4000), "token": "t"}) == 403
        )
    refusals = mesh.identity.refusals()
    assert len(refusals) == 1
    assert (
        len(refusals[0].reason) <= MAX_REFUSAL_TEXT
        and len(refusals[0].claimed_identity or "") <= MAX_REFUSAL_TEXT
    )
    assert MAX_REASON <= MAX_REFUSAL_TEXT


def test_refusals_are_rate_limited_per_source(mesh: ControlledMesh) -> None:
    csr = _csr("spiffe://demo.local/ns/web/sa/webapp")
    with _anonymous(mesh) as client:
        statuses = [
            _status(client, {"csr": csr, "token": f"bad-{i}"}) for i in range(REFUSALS_PER_MINUTE + 10)
        ]
    assert statuses[:REFUSALS_PER_MINUTE] == [403] * REFUSALS_PER_MINUTE
    assert set(statuses[REFUSALS_PER_MINUTE:]) == {429}
    assert len(mesh.identity.refusals()) == REFUSALS_PER_MINUTE
    # an honest sidecar from elsewhere is not punished: the limit is per source address
    assert mesh.plane.service.refusals.over("127.0.0.2") is False


def test_oversized_json_bodies_are_refused_unread(mesh: ControlledMesh) -> None:
    with mesh.operator() as op, pytest.raises((ControlRefused, ControlUnavailable)) as refused:
        op.request("POST", "/v1/config/apply", {"text": "#" * (2 << 20)})
    assert getattr(refused.value, "status", 413) == 413
    assert mesh.plane.store.generation() == 0


def _closed_within(sock: socket.socket | ssl.SSLSocket, seconds: float) -> float:
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(1024):
            pass
    except (ConnectionResetError, ssl.SSLError):
        pass
    return time.monotonic() - start


def test_slow_clients_are_cut_off(mesh: ControlledMesh) -> None:
    host, port = mesh.plane.url.removeprefix("https://").rsplit(":", 1)
    # no TLS handshake at all
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        assert _closed_within(raw, 8) < 5
    # a handshake, then half a request head, then nothing
    ctx = mesh.tls_as(mesh.mint("web/webapp")[1])
    with socket.create_connection((host, int(port)), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert _closed_within(tls, 8) < 5


def test_the_refusals_table_rolls_and_cuts_what_it_keeps() -> None:
    conn = sqlite3.connect(":memory:")  # the same SQL as meshward.db, without an fsync per row
    ledger = SvidLedger(conn)
    for i in range(MAX_REFUSALS + 250):
        ledger.record_refusal(
            "spiffe://demo.local/ns/x/sa/" + "y" * 5000, f"refused {i} " + "z" * 5000, "token"
        )
    (count,) = conn.execute("SELECT COUNT(*) FROM identity_refusals").fetchone()
    assert MAX_REFUSALS <= count <= MAX_REFUSALS + 100
    newest = ledger.refusals(limit=1)[0]
    assert newest.reason.startswith(f"refused {MAX_REFUSALS + 249} ")  # the oldest went, not the newest
    assert len(newest.reason) == MAX_REFUSAL_TEXT and len(newest.claimed_identity or "") == MAX_REFUSAL_TEXT
    conn.close()
