"""Issued certificates are X.509-SVIDs exactly as the SPIFFE X509-SVID specification says.

Checked field by field here, then by two independent implementations: the ``spiffe`` package
(X509Svid / X509Bundle) and ``openssl verify``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spiffe import SpiffeId as SpiffeLibId
from spiffe import TrustDomain, X509Bundle, X509Svid

from meshward.identity.authority import MAX_SVID_TTL
from meshward.identity.bootstrap import init_mesh
from meshward.identity.issuance import IdentityService, IssuedSvid
from meshward.identity.keys import generate_key, key_pem, make_csr
from meshward.identity.state import MeshState
from tests.identity.pki import openssl_verify


def _issue(
    service: IdentityService, who: str = "ml/fraud", ttl: dt.timedelta | None = None
) -> tuple[IssuedSvid, bytes]:
    key = generate_key()
    sid = service.identity(who)
    svid = service.issue(make_csr(key, sid), service.create_token(sid), ttl)
    return svid, key_pem(key)


def test_svid_fields_follow_the_spec(service: IdentityService, mesh: MeshState) -> None:
    svid, _ = _issue(service)
    chain = x509.load_pem_x509_certificates(svid.chain_pem)
    leaf, inter = chain
    assert len(chain) == 2, "chain = leaf + intermediate, never the root"
    assert inter == mesh.load_authority().intermediate

    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert list(san.value) == [x509.UniformResourceIdentifier("spiffe://demo.local/ns/ml/sa/fraud")]

    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False

    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    assert not (ku.value.key_cert_sign or ku.value.crl_sign)

    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}

    pub = leaf.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name == "secp256r1"
    assert leaf.issuer == inter.subject
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= dt.timedelta(hours=1, minutes=1)
    assert leaf.not_valid_after_utc == svid.not_after
    assert format(leaf.serial_number, "x") == svid.serial

    inter_bc = inter.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert inter_bc.ca and inter.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign


def test_spiffe_package_accepts_svid_and_bundle(service: IdentityService) -> None:
    svid, key = _issue(service, "demo.local/ns/web/sa/webapp")
    parsed = X509Svid.parse(svid.chain_pem, key)
    assert parsed.spiffe_id == SpiffeLibId("spiffe://demo.local/ns/web/sa/webapp")
    assert len(parsed.cert_chain) == 2
    bundle = X509Bundle.parse(TrustDomain("demo.local"), svid.bundle_pem)
    assert len(bundle.x509_authorities) == 1
    # the chain's intermediate is signed by a root in the bundle
    (root,) = bundle.x509_authorities
    parsed.cert_chain[1].verify_directly_issued_by(root)


def test_openssl_verify_accepts_chain(service: IdentityService, mesh: MeshState, tmp_path: Path) -> None:
    svid, _ = _issue(service)
    result = openssl_verify(mesh.bundle_path, svid.chain_pem, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ": OK" in result.stdout


def test_openssl_verify_refuses_chain_from_another_mesh(service: IdentityService, tmp_path: Path) -> None:
    other = MeshState(tmp_path / "other")
    init_mesh(other, "demo.local")
    svid, _ = _issue(service)
    result = openssl_verify(other.bundle_path, svid.chain_pem, tmp_path)
    assert result.returncode != 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(minutes=st.integers(min_value=1, max_value=7 * 24 * 60))
def test_lifetime_is_as_asked_but_capped_at_24h(service: IdentityService, minutes: int) -> None:
    asked = dt.timedelta(minutes=minutes)
    svid, _ = _issue(service, ttl=asked)
    leaf = x509.load_pem_x509_certificates(svid.chain_pem)[0]
    lifetime = leaf.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert lifetime <= min(asked, MAX_SVID_TTL)
    assert lifetime > min(asked, MAX_SVID_TTL) - dt.timedelta(minutes=1)


@pytest.mark.parametrize(
    "spelling", ["ml/fraud", "demo.local/ns/ml/sa/fraud", "spiffe://demo.local/ns/ml/sa/fraud"]
)
def test_mint_accepts_every_spelling(service: IdentityService, tmp_path: Path, spelling: str) -> None:
    out = tmp_path / "out"
    svid = service.mint(spelling, out)
    assert str(svid.spiffe_id) == "spiffe://demo.local/ns/ml/sa/fraud"
    assert (out / "key.pem").stat().st_mode & 0o777 == 0o600
    loaded = X509Svid.load(out / "cert.pem", out / "key.pem", serialization.Encoding.PEM)
    assert str(loaded.spiffe_id) == "spiffe://demo.local/ns/ml/sa/fraud"
