"""Test identity providers: real key pairs, JWKS documents and tokens minted with PyJWT."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

__all__ = ["Idp", "make_idp", "server_cert"]


@dataclass
class Idp:
    """One issuer with one signing key of ``alg``."""

    issuer: str
    alg: str
    kid: str
    private: Any
    jwk: dict[str, Any]

    def jwks(self, *extra: Idp) -> str:
        return json.dumps({"keys": [self.jwk, *(e.jwk for e in extra)]})

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {"iss": self.issuer, "sub": "user-1", "iat": now, "exp": now + 600}
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, self.private, algorithm=self.alg, headers={"kid": self.kid})

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def make_idp(issuer: str = "https://idp.example", alg: str = "ES256", kid: str = "k1") -> Idp:
    if alg == "ES256":
        private: Any = ec.generate_private_key(ec.SECP256R1())
        algo: Any = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256)
    elif alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        algo = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256)
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
        algo = jwt.algorithms.OKPAlgorithm()
    else:
        raise ValueError(alg)
    jwk = json.loads(algo.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "use": "sig"})
    return Idp(issuer, alg, kid, private, jwk)


def server_cert(d: Path) -> tuple[Path, Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the gateway's and HAProxy's outside face)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway.bench")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file, both = d / "gw.pem", d / "gw.key", d / "gw-both.pem"
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)
    key_file.chmod(0o600)
    both.write_bytes(cert_pem + key_pem)
    return cert_file, key_file, both
