"""Test identity providers: real key pairs, JWKS documents and tokens minted with PyJWT."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.support.certs import self_signed

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
    """The gateway's (and HAProxy's) outside face: certificate, key, and both in one PEM."""
    cert_file, key_file = self_signed(d, "gw")
    both = d / "gw-both.pem"
    both.write_bytes(cert_file.read_bytes() + key_file.read_bytes())
    return cert_file, key_file, both
