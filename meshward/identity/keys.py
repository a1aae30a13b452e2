"""Private keys and CSRs, made where they are used; key files are written 0600 atomically."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshward.identity.spiffe import SpiffeId

__all__ = ["generate_key", "key_pem", "load_key", "make_csr", "write_private", "write_public"]


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key, as the SPIFFE X509-SVID profile we follow requires."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an EC private key")
    return key


def make_csr(key: ec.EllipticCurvePrivateKey, spiffe_id: SpiffeId) -> bytes:
    """A PEM CSR carrying exactly one URI SAN: the workload's SPIFFE ID."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshward")]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id.uri)]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _write_atomic(path: Path, data: bytes, mode: int, durable: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_private(path: Path, data: bytes) -> None:
    """Write key material readable by its owner only (0600), never half-written."""
    _write_atomic(path, data, 0o600)


def write_public(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write a readable file, never half-written. ``durable=False`` skips the fsync: for a cache
    rewritten often and worth nothing torn (after a power loss it may hold the old content)."""
    _write_atomic(path, data, 0o644, durable)
