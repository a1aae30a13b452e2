"""Rotating the authority: old-root and new-root workloads keep talking during the overlap.

The handshakes are real mutual TLS over loopback (Python ``ssl``), each side trusting bundle.pem.
"""

from __future__ import annotations

import datetime as dt
import shutil
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from meshward.identity.bootstrap import CaSetupRefused, init_mesh
from meshward.identity.issuance import IdentityService
from meshward.identity.rotation import refresh_bundle, rotate
from meshward.identity.state import MeshState
from tests.identity.pki import mtls_exchange, openssl_verify

OLD = "spiffe://demo.local/ns/ml/sa/fraud"
NEW = "spiffe://demo.local/ns/web/sa/webapp"


def _mint(mesh: MeshState, who: str, out: Path) -> Path:
    with IdentityService(mesh) as svc:
        svc.mint(who, out)
    return out


def test_old_and_new_root_workloads_verify_each_other(mesh: MeshState, tmp_path: Path) -> None:
    old_dir = _mint(mesh, "ml/fraud", tmp_path / "old")
    old_root = mesh.load_authority().root
    rotate(mesh, new_root=True, overlap=dt.timedelta(hours=24))
    new_dir = _mint(mesh, "web/webapp", tmp_path / "new")
    assert mesh.load_authority().root != old_root
    assert len(x509.load_pem_x509_certificates(mesh.bundle_pem())) == 2

    bundle = mesh.bundle_path
    # old-root server, new-root client, and the other way around
    assert mtls_exchange(old_dir, new_dir, bundle, bundle) == (NEW, OLD)
    assert mtls_exchange(new_dir, old_dir, bundle, bundle) == (OLD, NEW)
    for d in (old_dir, new_dir):
        assert openssl_verify(bundle, (d / "cert.pem").read_bytes(), tmp_path).returncode == 0


def test_after_the_overlap_the_old_root_is_no_longer_trusted(mesh: MeshState, tmp_path: Path) -> None:
    old_dir = _mint(mesh, "ml/fraud", tmp_path / "old")
    rotate(mesh, new_root=True, overlap=dt.timedelta(hours=1))
    new_dir = _mint(mesh, "web/webapp", tmp_path / "new")
    assert refresh_bundle(mesh) == 2, "still inside the overlap"
    assert refresh_bundle(mesh, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)) == 1
    assert mesh.bundle_pem() == mesh.root_cert_path.read_bytes()
    with pytest.raises(ssl.SSLError):
        mtls_exchange(new_dir, old_dir, mesh.bundle_path, mesh.bundle_path)
    assert openssl_verify(mesh.bundle_path, (old_dir / "cert.pem").read_bytes(), tmp_path).returncode != 0


def test_intermediate_rotation_keeps_old_certificates_valid(mesh: MeshState, tmp_path: Path) -> None:
    old_dir = _mint(mesh, "ml/fraud", tmp_path / "old")
    old_inter = mesh.load_authority().intermediate
    result = rotate(mesh)
    assert not result.root_rotated and result.old_root_trusted_until is None
    assert mesh.load_authority().intermediate != old_inter
    new_dir = _mint(mesh, "web/webapp", tmp_path / "new")
    assert len(x509.load_pem_x509_certificates(mesh.bundle_pem())) == 1
    assert mtls_exchange(old_dir, new_dir, mesh.bundle_path, mesh.bundle_path) == (NEW, OLD)


def test_running_service_picks_up_rotation(mesh: MeshState, tmp_path: Path) -> None:
    with IdentityService(mesh) as svc:
        before = svc.mint("ml/fraud", tmp_path / "a")
        rotate(mesh, new_root=True)
        after = svc.mint("ml/fraud", tmp_path / "b")
        assert (
            x509.load_pem_x509_certificates(before.chain_pem)[1]
            != x509.load_pem_x509_certificates(after.chain_pem)[1]
        )
        assert after.bundle_pem == mesh.bundle_pem()


def test_a_second_root_rotation_keeps_both_previous_roots_during_their_overlaps(mesh: MeshState) -> None:
    rotate(mesh, new_root=True)
    rotate(mesh, new_root=True)
    assert len(x509.load_pem_x509_certificates(mesh.bundle_pem())) == 3


def test_rotation_refuses_negative_overlap(mesh: MeshState) -> None:
    with pytest.raises(CaSetupRefused, match="negative"):
        rotate(mesh, new_root=True, overlap=dt.timedelta(hours=-1))


def test_workload_outside_the_mesh_is_refused(mesh: MeshState, tmp_path: Path) -> None:
    inside = _mint(mesh, "ml/fraud", tmp_path / "inside")
    other = MeshState(tmp_path / "other")
    init_mesh(other, "demo.local")
    outside = _mint(other, "ml/fraud", tmp_path / "outside")
    with pytest.raises(ssl.SSLError):
        mtls_exchange(inside, outside, mesh.bundle_path, mesh.bundle_path)
    shutil.rmtree(other.path)
