"""Every way to ask for an SVID you may not have is refused with a clear reason, and recorded."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshward.identity.authority import CsrRefused
from meshward.identity.issuance import IdentityService
from meshward.identity.keys import generate_key, make_csr
from meshward.identity.spiffe import SpiffeId
from meshward.identity.state import MeshState
from meshward.identity.tokens import JoinTokens, TokenRefused
from tests.identity.pki import csr_with, tamper_signature, uri

FRAUD = SpiffeId("demo.local", "ml", "fraud")
WEB = SpiffeId("demo.local", "web", "webapp")


def _csr(sid: SpiffeId = FRAUD) -> bytes:
    return make_csr(generate_key(), sid)


@dataclass(frozen=True)
class Case:
    """A request (CSR + token, made from a service) and the reason it must be refused for."""

    name: str
    request: Callable[[IdentityService], tuple[bytes, str]]
    reason: str
    claimed: str | None


def _token(svc: IdentityService, sid: SpiffeId = FRAUD) -> str:
    return svc.create_token(sid)


def _used_token(svc: IdentityService) -> tuple[bytes, str]:
    token = _token(svc)
    svc.issue(_csr(), token)
    return _csr(), token


def _expired_token(svc: IdentityService) -> tuple[bytes, str]:
    conn = svc.state.connect()
    try:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        token = JoinTokens(conn).create(FRAUD, dt.timedelta(minutes=10), now=past)
    finally:
        conn.close()
    return _csr(), token


CASES = [
    Case(
        "csr identity differs from token",
        lambda s: (_csr(WEB), _token(s, FRAUD)),
        "join token is for spiffe://demo.local/ns/ml/sa/fraud, but the CSR asks for spiffe://demo.local/ns/web/sa/webapp",
        WEB.uri,
    ),
    Case("token reused", _used_token, "join token was already used (1 use allowed)", FRAUD.uri),
    Case("token expired", _expired_token, "join token expired at", FRAUD.uri),
    Case("token unknown", lambda s: (_csr(), "mwjt_not-a-token"), "join token is unknown", FRAUD.uri),
    Case(
        "extra DNS SAN",
        lambda s: (csr_with([uri(FRAUD.uri), x509.DNSName("fraud.ml")]), _token(s)),
        "CSR identity: expected exactly one URI SAN, found 1 URI and 1 other SANs",
        FRAUD.uri,
    ),
    Case(
        "two URI SANs",
        lambda s: (csr_with([uri(FRAUD.uri), uri(WEB.uri)]), _token(s)),
        "CSR identity: expected exactly one URI SAN, found 2 URI",
        f"{FRAUD.uri},{WEB.uri}",
    ),
    Case("no SAN", lambda s: (csr_with([]), _token(s)), "CSR identity: no subjectAltName", None),
    Case(
        "CA:TRUE",
        lambda s: (csr_with([uri(FRAUD.uri)], ca=True), _token(s)),
        "CSR asks for CA:TRUE",
        FRAUD.uri,
    ),
    Case(
        "bad signature",
        lambda s: (tamper_signature(_csr()), _token(s)),
        "CSR signature is invalid",
        FRAUD.uri,
    ),
    Case(
        "wrong trust domain",
        lambda s: (_csr(SpiffeId("evil.example", "ml", "fraud")), _token(s)),
        "CSR trust domain 'evil.example' is not 'demo.local'",
        "spiffe://evil.example/ns/ml/sa/fraud",
    ),
    Case(
        "not a SPIFFE URI",
        lambda s: (csr_with([uri("https://demo.local/ml/fraud")]), _token(s)),
        "CSR identity: not a SPIFFE URI",
        "https://demo.local/ml/fraud",
    ),
    Case(
        "P-384 key",
        lambda s: (csr_with([uri(FRAUD.uri)], key=ec.generate_private_key(ec.SECP384R1())), _token(s)),
        "CSR key must be ECDSA P-256",
        FRAUD.uri,
    ),
    Case(
        "RSA key",
        lambda s: (csr_with([uri(FRAUD.uri)], key=rsa.generate_private_key(65537, 2048)), _token(s)),
        "CSR key must be ECDSA P-256",
        FRAUD.uri,
    ),
    Case("not PEM", lambda s: (b"hello", _token(s)), "CSR is not valid PEM", None),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_refused_with_reason_and_recorded(service: IdentityService, case: Case) -> None:
    csr, token = case.request(service)
    issued_before = len(service.certificates())
    with pytest.raises(CsrRefused) as info:
        service.issue(csr, token)
    assert case.reason in info.value.reason
    assert len(service.certificates()) == issued_before, "nothing was signed"
    refusal = service.refusals()[0]
    assert refusal.reason == info.value.reason
    assert refusal.claimed_identity == case.claimed
    assert refusal.via == "token"
    assert token not in refusal.reason, "tokens never go into records"


def test_token_refusals_are_token_refused(service: IdentityService) -> None:
    with pytest.raises(TokenRefused):
        service.issue(_csr(), "mwjt_unknown")


def test_bad_csr_does_not_spend_the_token(service: IdentityService) -> None:
    token = _token(service)
    with pytest.raises(CsrRefused):
        service.issue(csr_with([uri(FRAUD.uri)], ca=True), token)
    assert service.issue(_csr(), token).spiffe_id == FRAUD


def test_renew_only_for_own_identity(service: IdentityService) -> None:
    renewed = service.renew(_csr(FRAUD), "ml/fraud")
    assert renewed.spiffe_id == FRAUD
    with pytest.raises(CsrRefused, match="may only renew its own identity"):
        service.renew(_csr(WEB), FRAUD.uri)
    with pytest.raises(CsrRefused, match="caller identity"):
        service.renew(_csr(FRAUD), "not an identity")
    assert [r.via for r in service.refusals()] == ["renew", "renew"]


@pytest.mark.parametrize("spelling", ["as issued", "as Python ssl getpeercert shows it"])
def test_renew_refused_for_revoked_certificate(service: IdentityService, spelling: str) -> None:
    first = service.issue(_csr(), _token(service))
    assert service.revoke(first.serial)
    peer_serial = first.serial if spelling == "as issued" else "00" + first.serial.upper()
    with pytest.raises(CsrRefused, match="revoked"):
        service.renew(_csr(), FRAUD, peer_serial=peer_serial)
    assert service.certificates(FRAUD)[0].revoked


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(uses=st.integers(min_value=1, max_value=4))
def test_token_gives_exactly_its_uses(service: IdentityService, uses: int) -> None:
    token = service.create_token(FRAUD, uses=uses)
    for _ in range(uses):
        service.issue(_csr(), token)
    with pytest.raises(TokenRefused, match=f"already used \\({uses} use"):
        service.issue(_csr(), token)


def test_concurrent_requests_spend_a_single_use_token_once(mesh: MeshState) -> None:
    with IdentityService(mesh) as svc:
        token = svc.create_token(FRAUD)
    csrs = [_csr() for _ in range(6)]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(csrs))

    def attempt(csr: bytes) -> None:
        with IdentityService(mesh) as own:  # separate connections, like separate processes
            barrier.wait(timeout=60)
            try:
                own.issue(csr, token)
                outcomes.append("issued")
            except TokenRefused as exc:
                outcomes.append(exc.reason)

    threads = [threading.Thread(target=attempt, args=(c,)) for c in csrs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes).count("issued") == 1
    assert all(o == "issued" or "already used" in o for o in outcomes)


def test_only_a_hash_of_the_token_is_stored(service: IdentityService, mesh: MeshState) -> None:
    token = service.create_token(FRAUD)
    service.issue(_csr(), token)
    conn = sqlite3.connect(mesh.db_path)
    try:
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    assert token not in dump
    assert token[len("mwjt_") :] not in dump


@pytest.mark.parametrize(
    ("ttl", "uses", "message"),
    [
        (dt.timedelta(0), 1, "lifetime"),
        (dt.timedelta(days=31), 1, "lifetime"),
        (dt.timedelta(minutes=10), 0, "uses"),
        (dt.timedelta(minutes=10), 10_001, "uses"),
    ],
)
def test_token_limits(service: IdentityService, ttl: dt.timedelta, uses: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        service.create_token(FRAUD, ttl, uses)


_SAN = st.one_of(
    st.builds(
        uri, st.sampled_from([FRAUD.uri, WEB.uri, "spiffe://evil.example/ns/a/sa/b", "https://x.test/"])
    ),
    st.builds(x509.DNSName, st.sampled_from(["fraud.ml", "localhost"])),
    st.builds(x509.RFC822Name, st.just("ops@example.com")),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sans=st.lists(_SAN, max_size=3))
def test_only_exactly_one_spiffe_id_of_this_domain_is_signed(
    service: IdentityService, sans: list[x509.GeneralName]
) -> None:
    authority = service.authority()
    csr = csr_with(sans)
    valid = len(sans) == 1 and sans[0] in (uri(FRAUD.uri), uri(WEB.uri))
    if valid:
        assert authority.check_csr(csr)[1].uri == sans[0].value
    else:
        with pytest.raises(CsrRefused):
            authority.check_csr(csr)
