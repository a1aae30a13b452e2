"""Plugging in the operator's own CA (a root, or an intermediate whose root stays offline)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from spiffe import TrustDomain, X509Bundle, X509Svid

from meshward.identity.authority import pem
from meshward.identity.bootstrap import CaSetupRefused, init_mesh
from meshward.identity.issuance import IdentityService
from meshward.identity.keys import generate_key, key_pem, make_csr
from meshward.identity.rotation import rotate
from meshward.identity.state import MeshState
from tests.identity.pki import ca_cert, openssl_verify, write_key


def _issue(state: MeshState) -> tuple[bytes, bytes]:
    with IdentityService(state) as svc:
        key = generate_key()
        sid = svc.identity("ml/fraud")
        return svc.issue(make_csr(key, sid), svc.create_token(sid)).chain_pem, key_pem(key)


def test_operator_root_gets_a_meshward_intermediate(tmp_path: Path) -> None:
    root_key = generate_key()
    root = ca_cert("Acme Root", root_key, None, days=3650)
    (tmp_path / "root.pem").write_bytes(pem(root))
    state = MeshState(tmp_path / "s")
    td = init_mesh(state, "acme.test", tmp_path / "root.pem", write_key(tmp_path / "root.key", root_key))
    assert td == "acme.test"
    authority = state.load_authority()
    assert authority.root == root
    authority.intermediate.verify_directly_issued_by(root)
    assert state.root_key_path.exists()
    chain, key = _issue(state)
    assert openssl_verify(state.bundle_path, chain, tmp_path).returncode == 0
    X509Svid.parse(chain, key)
    rotate(state)  # the root key is held, so intermediates rotate as usual
    state.load_authority().intermediate.verify_directly_issued_by(root)


def _offline_pki(
    tmp_path: Path, inter_days: int = 365
) -> tuple[Path, Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    root_key, policy_key, issuing_key = generate_key(), generate_key(), generate_key()
    root = ca_cert("Acme Offline Root", root_key, None, days=3650)
    policy = ca_cert("Acme Policy CA", policy_key, (root, root_key), days=1000)
    issuing = ca_cert(
        "Acme Mesh Issuing CA", issuing_key, (policy, policy_key), days=inter_days, path_length=0
    )
    chain = tmp_path / "chain.pem"
    chain.write_bytes(pem(issuing) + pem(policy) + pem(root))
    return chain, write_key(tmp_path / "issuing.key", issuing_key), root, root_key


def test_operator_intermediate_with_offline_root(tmp_path: Path) -> None:
    chain_file, key_file, root, _ = _offline_pki(tmp_path)
    state = MeshState(tmp_path / "s")
    init_mesh(state, "acme.test", chain_file, key_file)
    assert not state.root_key_path.exists(), "the operator keeps the root key"
    assert state.bundle_pem() == pem(root)
    chain, key = _issue(state)
    assert len(x509.load_pem_x509_certificates(chain)) == 3, "leaf + issuing + policy CA, not the root"
    result = openssl_verify(state.bundle_path, chain, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    svid = X509Svid.parse(chain, key)
    assert str(svid.spiffe_id) == "spiffe://acme.test/ns/ml/sa/fraud"
    assert X509Bundle.parse(TrustDomain("acme.test"), state.bundle_pem()).x509_authorities == {root}
    with pytest.raises(CaSetupRefused, match="does not hold its root key"):
        rotate(state)


def test_operator_intermediate_rotation_to_a_new_chain(tmp_path: Path) -> None:
    chain_file, key_file, _, _ = _offline_pki(tmp_path)
    state = MeshState(tmp_path / "s")
    init_mesh(state, "acme.test", chain_file, key_file)
    old_chain, _ = _issue(state)
    (tmp_path / "next").mkdir()
    next_chain, next_key, next_root, _ = _offline_pki(tmp_path / "next")
    result = rotate(state, ca_cert=next_chain, ca_key=next_key)
    assert result.root_rotated and result.bundle_roots == 2
    new_chain, _ = _issue(state)
    for chain in (old_chain, new_chain):
        assert openssl_verify(state.bundle_path, chain, tmp_path).returncode == 0
    assert state.load_authority().root == next_root


REFUSALS = [
    ("not a CA", "is not a CA"),
    ("key mismatch", "is not the key of the first certificate"),
    ("no root in chain", "does not end in a self-signed root"),
    ("wrong order", "is not issued by the next certificate"),
    ("trust domain clash", "is a CA for trust domain"),
    ("pathlen 0 root", "pathLen=0"),
    ("expired", "is not valid now"),
]


@pytest.mark.parametrize(("case", "message"), REFUSALS, ids=[c for c, _ in REFUSALS])
def test_unusable_operator_ca_is_refused(tmp_path: Path, case: str, message: str) -> None:
    root_key, inter_key = generate_key(), generate_key()
    root = ca_cert("Acme Root", root_key, None)
    inter = ca_cert("Acme Issuing", inter_key, (root, root_key))
    certs, key, td = [root], root_key, "acme.test"
    if case == "not a CA":
        svid_dir = tmp_path / "leaf"
        other = MeshState(tmp_path / "other")
        init_mesh(other, "acme.test")
        with IdentityService(other) as svc:
            svc.mint("ml/x", svid_dir)
        certs = x509.load_pem_x509_certificates((svid_dir / "cert.pem").read_bytes())[:1]
        key = None  # use the leaf key
    elif case == "key mismatch":
        key = inter_key
    elif case == "no root in chain":
        certs, key = [inter], inter_key
    elif case == "wrong order":
        certs, key = [inter, ca_cert("Unrelated", generate_key(), None)], inter_key
    elif case == "trust domain clash":
        other = MeshState(tmp_path / "other")
        init_mesh(other, "other.test")
        (tmp_path / "o.pem").write_bytes(other.root_cert_path.read_bytes())
        (tmp_path / "o.key").write_bytes(other.root_key_path.read_bytes())
        with pytest.raises(CaSetupRefused, match=message):
            init_mesh(MeshState(tmp_path / "s"), td, tmp_path / "o.pem", tmp_path / "o.key")
        return
    elif case == "pathlen 0 root":
        certs = [ca_cert("Acme Root", root_key, None, path_length=0)]
    elif case == "expired":
        certs = [ca_cert("Acme Root", root_key, None, days=-1)]
    cert_file = tmp_path / "ca.pem"
    cert_file.write_bytes(b"".join(pem(c) for c in certs))
    key_file = tmp_path / "ca.key"
    if key is None:
        key_file.write_bytes((tmp_path / "leaf" / "key.pem").read_bytes())
    else:
        write_key(key_file, key)
    state = MeshState(tmp_path / "s")
    with pytest.raises(CaSetupRefused, match=message):
        init_mesh(state, td, cert_file, key_file)
    assert not state.exists()


def test_expiry_warnings(tmp_path: Path) -> None:
    chain_file, key_file, _, _ = _offline_pki(tmp_path, inter_days=10)
    state = MeshState(tmp_path / "s")
    init_mesh(state, "acme.test", chain_file, key_file)
    with IdentityService(state) as svc:
        warnings = svc.expiry_warnings(days=30)
        assert len(warnings) == 1
        assert warnings[0].startswith("intermediate CA CN=Acme Mesh Issuing CA expires in 9 days")
        assert "meshward ca rotate --ca-cert" in warnings[0]
        assert svc.expiry_warnings(days=5) == []


def test_no_warnings_for_a_fresh_mesh(mesh: MeshState) -> None:
    with IdentityService(mesh) as svc:
        assert svc.expiry_warnings() == []
        assert len(svc.expiry_warnings(days=400)) == 1  # the 1-year intermediate
        assert len(svc.expiry_warnings(days=4000)) == 2


def test_intermediate_never_outlives_root(tmp_path: Path) -> None:
    root_key = generate_key()
    root = ca_cert("Acme Root", root_key, None, days=20)
    (tmp_path / "root.pem").write_bytes(pem(root))
    state = MeshState(tmp_path / "s")
    init_mesh(state, "acme.test", tmp_path / "root.pem", write_key(tmp_path / "root.key", root_key))
    assert state.load_authority().intermediate.not_valid_after_utc <= root.not_valid_after_utc
    with IdentityService(state) as svc:
        assert any(w.startswith("root CA CN=Acme Root expires in 19 days") for w in svc.expiry_warnings())
    assert dt.datetime.now(dt.UTC) < root.not_valid_after_utc
