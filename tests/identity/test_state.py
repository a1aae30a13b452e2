"""The state directory layout, key file modes, the database, and the operator identity."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from meshward.identity.authority import pem
from meshward.identity.bootstrap import CaSetupRefused, init_mesh
from meshward.identity.issuance import IdentityService
from meshward.identity.keys import generate_key, key_pem, write_private
from meshward.identity.rotation import rotate
from meshward.identity.state import MeshState, MeshStateError
from tests.identity.pki import openssl_verify


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_layout(mesh: MeshState) -> None:
    doc = json.loads(mesh.mesh_file.read_text())
    assert doc["trust_domain"] == "demo.local"
    assert dt.datetime.strptime(doc["created"], "%Y-%m-%dT%H:%M:%SZ")
    for name in ("root.pem", "root.key", "intermediate.pem", "intermediate.key", "bundle.pem"):
        assert (mesh.ca_dir / name).is_file(), name
    assert mesh.bundle_pem() == (mesh.ca_dir / "root.pem").read_bytes()
    assert mesh.exists() and mesh.trust_domain == "demo.local"


def test_ca_shape(mesh: MeshState) -> None:
    authority = mesh.load_authority()
    root, inter = authority.root, authority.intermediate
    assert root.issuer == root.subject
    assert inter.issuer == root.subject
    inter.verify_directly_issued_by(root)
    root_life = root.not_valid_after_utc - root.not_valid_before_utc
    inter_life = inter.not_valid_after_utc - inter.not_valid_before_utc
    assert dt.timedelta(days=3649) < root_life < dt.timedelta(days=3651)
    assert dt.timedelta(days=364) < inter_life < dt.timedelta(days=366)
    for cert in (root, inter):
        assert cert.signature_hash_algorithm is not None
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
        assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]


def test_key_files_are_0600(mesh: MeshState, tmp_path: Path) -> None:
    _cert, key, _bundle = mesh.ensure_operator_cert()
    with IdentityService(mesh) as svc:
        svc.mint("ops/cli", tmp_path / "client")
    for path in (mesh.root_key_path, mesh.intermediate_key_path, key, tmp_path / "client" / "key.pem"):
        assert _mode(path) == 0o600, path
    rotate(mesh, new_root=True)
    for path in (mesh.root_key_path, mesh.intermediate_key_path):
        assert _mode(path) == 0o600, path
    assert _mode(mesh.path) == 0o700


def test_missing_mesh_is_one_clear_error(tmp_path: Path) -> None:
    state = MeshState(tmp_path / "nothing")
    with pytest.raises(MeshStateError, match="run `meshward init"):
        state.load_authority()
    with pytest.raises(MeshStateError):
        IdentityService(state)
    assert not state.path.exists(), "asking must not create a mesh"


def test_connect_is_wal_with_busy_timeout(mesh: MeshState) -> None:
    conn = mesh.connect()
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    finally:
        conn.close()


def test_operator_cert(mesh: MeshState, tmp_path: Path) -> None:
    cert_path, _key_path, bundle_path = mesh.ensure_operator_cert()
    leaf = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [u.value for u in uris] == ["spiffe://demo.local/ns/meshward-system/sa/operator"]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc >= dt.timedelta(hours=24)
    assert openssl_verify(bundle_path, cert_path.read_bytes(), tmp_path).returncode == 0
    # fresh: the same certificate comes back
    assert mesh.ensure_operator_cert()[0].read_bytes() == cert_path.read_bytes()


def test_operator_cert_reminted_past_half_life(mesh: MeshState) -> None:
    cert_path, key_path, _ = mesh.ensure_operator_cert()
    authority = mesh.load_authority()
    key = generate_key()
    now = dt.datetime.now(dt.UTC)
    old = (
        x509.CertificateBuilder()
        .subject_name(authority.intermediate.subject)
        .issuer_name(authority.intermediate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=13))
        .not_valid_after(now + dt.timedelta(hours=11))
        .sign(authority.intermediate_key, hashes.SHA256())
    )

    write_private(key_path, key_pem(key))
    cert_path.write_bytes(pem(old) + pem(authority.intermediate))
    mesh.ensure_operator_cert()
    renewed = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    assert renewed.serial_number != old.serial_number
    assert renewed.not_valid_before_utc > now - dt.timedelta(minutes=2)


def test_operator_cert_follows_rotation(mesh: MeshState, tmp_path: Path) -> None:
    cert_path, _, bundle_path = mesh.ensure_operator_cert()
    before = cert_path.read_bytes()
    rotate(mesh, new_root=True)
    mesh.ensure_operator_cert()
    assert cert_path.read_bytes() != before
    assert bundle_path.read_bytes() == mesh.bundle_pem()
    assert openssl_verify(bundle_path, cert_path.read_bytes(), tmp_path).returncode == 0


def test_init_refuses_existing_mesh_without_force(mesh: MeshState) -> None:
    root = mesh.root_cert_path.read_bytes()
    with pytest.raises(CaSetupRefused, match=r"already exists.*--force"):
        init_mesh(mesh, "demo.local")
    assert mesh.root_cert_path.read_bytes() == root
    init_mesh(mesh, "other.local", force=True)
    assert mesh.root_cert_path.read_bytes() != root
    assert MeshState(mesh.path).trust_domain == "other.local"


def test_force_forgets_old_records(mesh: MeshState) -> None:
    with IdentityService(mesh) as svc:
        svc.mint("ml/a", mesh.path / "tmp-a")
        assert svc.certificates()
    init_mesh(mesh, "demo.local", force=True)
    with IdentityService(mesh) as svc:
        assert svc.certificates() == []


@pytest.mark.parametrize("td", ["Bad.Domain", "a/b", "", "spaces here"])
def test_invalid_trust_domain(tmp_path: Path, td: str) -> None:
    state = MeshState(tmp_path / "s")
    with pytest.raises(CaSetupRefused, match="trust domain"):
        init_mesh(state, td or " ")
    assert not state.exists()
