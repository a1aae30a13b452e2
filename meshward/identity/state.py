"""The mesh state directory: trust domain, CA files, the operator identity and the database.

Layout (a contract other modules rely on)::

    <state>/mesh.json               {"trust_domain": ..., "created": iso8601}
    <state>/ca/root.pem             the current root CA certificate
    <state>/ca/root.key             its key, 0600 (absent when the operator plugged in an intermediate)
    <state>/ca/intermediate.pem     the issuing CA, then any CAs between it and the root (never the root)
    <state>/ca/intermediate.key     the issuing key, 0600
    <state>/ca/bundle.pem           every trusted root: after a root rotation, old and new during the overlap
    <state>/ca/rotation.json        roots retired by a rotation and until when they stay in bundle.pem
    <state>/operator/cert.pem       the operator SVID spiffe://TD/ns/meshward-system/sa/operator (chain)
    <state>/operator/key.pem        its key, 0600
    <state>/operator/bundle.pem     a copy of the trust bundle, for mTLS clients of the control plane
    <state>/meshward.db             SQLite (WAL, busy_timeout); each module creates its own tables

Writers of the CA pair (``init``, ``ca rotate``) hold an exclusive ``flock`` on ``ca/.lock``;
:meth:`MeshState.load_authority` holds a shared one, so nobody reads a new certificate with an old key.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from meshward.identity.authority import Authority
from meshward.identity.keys import generate_key, key_pem, load_key, write_private, write_public
from meshward.identity.ledger import SvidLedger, iso
from meshward.identity.renewal import renewal_due
from meshward.identity.spiffe import SpiffeId

__all__ = [
    "OPERATOR_LIFETIME",
    "OPERATOR_NAMESPACE",
    "OPERATOR_SERVICE_ACCOUNT",
    "MeshState",
    "MeshStateError",
    "load_pem_chain",
]

OPERATOR_NAMESPACE = "meshward-system"
OPERATOR_SERVICE_ACCOUNT = "operator"
OPERATOR_LIFETIME = dt.timedelta(hours=24)
SQLITE_BUSY_TIMEOUT_MS = 10_000


class MeshStateError(OSError):
    """The state directory is missing or damaged (the operator's to fix).

    A subclass of :class:`OSError` so that every CLI command reports it as one line.
    """


def load_pem_chain(data: bytes, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise MeshStateError(f"{what}: no valid PEM certificate") from exc
    return certs


class MeshState:
    """One mesh's state directory (see the module docstring for the layout)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._trust_domain: str | None = None

    # -- paths -----------------------------------------------------------------------------------
    @property
    def mesh_file(self) -> Path:
        return self.path / "mesh.json"

    @property
    def ca_dir(self) -> Path:
        return self.path / "ca"

    @property
    def root_cert_path(self) -> Path:
        return self.ca_dir / "root.pem"

    @property
    def root_key_path(self) -> Path:
        return self.ca_dir / "root.key"

    @property
    def intermediate_cert_path(self) -> Path:
        return self.ca_dir / "intermediate.pem"

    @property
    def intermediate_key_path(self) -> Path:
        return self.ca_dir / "intermediate.key"

    @property
    def bundle_path(self) -> Path:
        return self.ca_dir / "bundle.pem"

    @property
    def rotation_path(self) -> Path:
        return self.ca_dir / "rotation.json"

    @property
    def operator_dir(self) -> Path:
        return self.path / "operator"

    @property
    def db_path(self) -> Path:
        return self.path / "meshward.db"

    # -- mesh.json -------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.mesh_file.exists()

    def _require(self) -> None:
        if not self.exists():
            raise MeshStateError(
                f"no mesh in {self.path} (start one with `meshward up -f MESH.yaml --state {self.path}`, "
                f"or run `meshward init --state {self.path}` first for an empty one)"
            )

    @property
    def trust_domain(self) -> str:
        if self._trust_domain is None:
            self._require()
            try:
                doc = json.loads(self.mesh_file.read_text())
                self._trust_domain = str(doc["trust_domain"])
            except (ValueError, KeyError, TypeError) as exc:
                raise MeshStateError(f"{self.mesh_file} is damaged: {exc}") from exc
        return self._trust_domain

    def write_mesh_file(self, trust_domain: str) -> None:
        created = iso(dt.datetime.now(dt.UTC))
        doc = {"trust_domain": trust_domain, "created": created}
        write_public(self.mesh_file, (json.dumps(doc, indent=2) + "\n").encode())
        self._trust_domain = trust_domain

    # -- CA files --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def ca_lock(self, exclusive: bool) -> Iterator[None]:
        """Serialize CA writers against readers of the certificate + key pair."""
        self.ca_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.ca_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def _read(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise MeshStateError(f"{path} is missing: the mesh state is incomplete") from exc

    def load_authority(self) -> Authority:
        """The issuing CA as it is on disk now."""
        td = self.trust_domain
        with self.ca_lock(exclusive=False):
            root = load_pem_chain(self._read(self.root_cert_path), str(self.root_cert_path))[0]
            chain = load_pem_chain(self._read(self.intermediate_cert_path), str(self.intermediate_cert_path))
            self._read(self.intermediate_key_path)
            try:
                key = load_key(self.intermediate_key_path)
            except ValueError as exc:
                raise MeshStateError(f"{self.intermediate_key_path}: {exc}") from exc
        if key.public_key() != chain[0].public_key():
            raise MeshStateError(f"{self.intermediate_key_path} does not match {self.intermediate_cert_path}")
        return Authority(td, root, chain[0], key, tuple(chain[1:]))

    def root_key(self) -> ec.EllipticCurvePrivateKey | None:
        """The root key, or None when the operator keeps the root elsewhere."""
        if not self.root_key_path.exists():
            return None
        try:
            return load_key(self.root_key_path)
        except ValueError as exc:
            raise MeshStateError(f"{self.root_key_path}: {exc}") from exc

    def bundle_pem(self) -> bytes:
        """Every trusted root, PEM concatenated (what mTLS peers verify against)."""
        self._require()
        return self._read(self.bundle_path)

    # -- database --------------------------------------------------------------------------------
    def connect(self, check_same_thread: bool = True) -> sqlite3.Connection:
        """A connection to ``meshward.db`` in WAL mode with a busy timeout; callers close it."""
        self.path.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.db_path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, check_same_thread=check_same_thread
        )
        conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        with contextlib.suppress(OSError):
            os.chmod(self.db_path, 0o600)
        return conn

    # -- operator identity -----------------------------------------------------------------------
    @property
    def operator_id(self) -> SpiffeId:
        return SpiffeId(self.trust_domain, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT)

    def ensure_operator_cert(self) -> tuple[Path, Path, Path]:
        """``(cert_path, key_path, bundle_path)`` of a valid operator SVID, re-minted when needed.

        A new one is made when missing, past half-life, or not issued by the current intermediate
        (after ``ca rotate``); the bundle copy is refreshed every time.
        """
        self._require()
        out = self.operator_dir
        out.mkdir(parents=True, exist_ok=True)
        os.chmod(out, 0o700)
        cert_path, key_path, bundle_path = out / "cert.pem", out / "key.pem", out / "bundle.pem"
        lock_fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            authority = self.load_authority()
            bundle = self.bundle_pem()
            if not self._operator_cert_fresh(cert_path, key_path, authority):
                key = generate_key()
                leaf = authority.issue(self.operator_id, key.public_key(), OPERATOR_LIFETIME)
                write_private(key_path, key_pem(key))
                write_public(cert_path, authority.chain_pem(leaf))
                with contextlib.closing(self.connect()) as conn:
                    SvidLedger(conn).record_issued(leaf, self.operator_id, via="operator")
            if not bundle_path.exists() or bundle_path.read_bytes() != bundle:
                write_public(bundle_path, bundle)
        finally:
            os.close(lock_fd)
        return cert_path, key_path, bundle_path

    @staticmethod
    def _operator_cert_fresh(cert_path: Path, key_path: Path, authority: Authority) -> bool:
        if not (cert_path.exists() and key_path.exists()):
            return False
        try:
            leaf = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
            key = load_key(key_path)
        except ValueError:
            return False
        if key.public_key() != leaf.public_key() or leaf.issuer != authority.intermediate.subject:
            return False
        try:
            leaf.verify_directly_issued_by(authority.intermediate)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return not renewal_due(leaf.not_valid_before_utc, leaf.not_valid_after_utc)

    def __repr__(self) -> str:
        return f"MeshState({str(self.path)!r})"
