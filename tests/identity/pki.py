"""Test helpers: hand-made CSRs (good and bad), operator CAs, openssl verify, a loopback mTLS pair."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import subprocess
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from meshward.identity.keys import generate_key, key_pem

MESHWARD = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "meshward"


def csr_with(
    sans: list[x509.GeneralName],
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
    ca: bool | None = None,
) -> bytes:
    """A CSR with exactly the SANs given (and a BasicConstraints extension when ``ca`` is set)."""
    key = key or generate_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test")])
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def uri(text: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(text)


def tamper_signature(csr_pem: bytes) -> bytes:
    """The same CSR with one bit of its signature flipped (still parses, no longer verifies)."""
    der = bytearray(x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)


def ca_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    days: int = 365,
    path_length: int | None = None,
) -> x509.Certificate:
    """An operator's own CA certificate, made the way an external PKI would."""
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5) if days > 0 else now - dt.timedelta(days=30))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(key_pem(key))
    return path


def openssl_verify(bundle: Path, chain_pem: bytes, tmp: Path) -> subprocess.CompletedProcess[str]:
    """``openssl verify -CAfile bundle -untrusted <intermediates> leaf``."""
    certs = x509.load_pem_x509_certificates(chain_pem)
    leaf, untrusted = tmp / "leaf.pem", tmp / "untrusted.pem"
    leaf.write_bytes(certs[0].public_bytes(serialization.Encoding.PEM))
    untrusted.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs[1:]))
    cmd = ["openssl", "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", str(bundle)]
    cmd += ["-untrusted", str(untrusted), str(leaf)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


def _context(side: int, cert: Path, key: Path, bundle: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(side)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(bundle)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = False  # SPIFFE: the peer is checked by its URI SAN, not a host name
    return ctx


def peer_uri(sock: ssl.SSLSocket) -> str:
    cert = sock.getpeercert()
    assert cert, "peer presented no certificate"
    uris = [v for k, v in cert.get("subjectAltName", ()) if k == "URI"]
    assert len(uris) == 1
    return str(uris[0])


def mtls_exchange(
    server_dir: Path, client_dir: Path, server_bundle: Path, client_bundle: Path
) -> tuple[str, str]:
    """A real mutual TLS handshake over loopback; returns (what the server saw, what the client saw).

    Each directory holds cert.pem (chain) and key.pem. Raises ssl.SSLError when either side refuses.
    """
    server_ctx = _context(
        ssl.PROTOCOL_TLS_SERVER, server_dir / "cert.pem", server_dir / "key.pem", server_bundle
    )
    client_ctx = _context(
        ssl.PROTOCOL_TLS_CLIENT, client_dir / "cert.pem", client_dir / "key.pem", client_bundle
    )
    seen: dict[str, object] = {}
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            raw, _ = listener.accept()
            raw.settimeout(10)
            with server_ctx.wrap_socket(raw, server_side=True) as tls:
                seen["server_saw"] = peer_uri(tls)
                tls.sendall(tls.recv(64))
        except (OSError, AssertionError) as exc:
            seen["server_error"] = exc

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_ctx.wrap_socket(raw) as tls,
        ):
            client_saw = peer_uri(tls)
            tls.sendall(b"ping")
            echoed = tls.recv(64)
    finally:
        thread.join(timeout=10)
        listener.close()
    if "server_error" in seen:
        raise ssl.SSLError(f"server side: {seen['server_error']}")
    assert echoed == b"ping"
    return str(seen["server_saw"]), client_saw


def run_cli(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(MESHWARD), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"meshward {' '.join(map(str, args))} failed: {proc.stderr}")
    return proc
