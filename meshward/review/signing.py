"""Signing reports with the audit checkpoint key, and verifying them.

The key is the control plane's Ed25519 checkpoint key (``<state>/audit/checkpoint.key``,
0600; see :mod:`meshward.audit.checkpoint`), read here and never written: a report signed
with it carries the same authority as the audit checkpoints. Two forms:

- embedded (JSON reports): ``"signature": {"algorithm": "ed25519", "keyId": ..., "value": ...}``
  over :func:`canonical_report` (the report without ``signature``, sorted compact JSON);
- detached (any rendering): the base64 signature of the exact bytes, in a file of its own.

``keyId`` is the SHA-256 of the public key (DER), so a verifier can tell which key signed.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from meshward.audit.checkpoint import load_public_key

__all__ = [
    "ReportSigner",
    "SignatureError",
    "canonical_report",
    "key_id",
    "public_key",
    "verify_bytes",
    "verify_report",
]


def canonical_report(report: dict[str, Any]) -> bytes:
    """What an embedded signature covers: the report without ``signature``, as compact JSON
    with sorted keys (so a report parsed and printed again verifies the same)."""
    body = {k: v for k, v in report.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


class SignatureError(ValueError):
    """The signature is missing, malformed, from another key, or does not verify."""


def key_id(key: Ed25519PublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


class ReportSigner:
    """The checkpoint key of a state directory, read only."""

    def __init__(self, state_dir: Path) -> None:
        path = Path(state_dir) / "audit" / "checkpoint.key"
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise SignatureError(
                f"no audit checkpoint key in {path.parent} (has the control plane run?)"
            ) from None
        except (OSError, ValueError) as exc:
            raise SignatureError(f"cannot read {path}: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SignatureError(f"{path}: not an Ed25519 private key")
        self._key = key
        self.key_id = key_id(key.public_key())

    def sign_bytes(self, data: bytes) -> str:
        return base64.b64encode(self._key.sign(data)).decode()

    def sign_report(self, report: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``report`` with its embedded signature."""
        body = {k: v for k, v in report.items() if k != "signature"}
        value = self.sign_bytes(canonical_report(body))
        return {**body, "signature": {"algorithm": "ed25519", "keyId": self.key_id, "value": value}}


def public_key(state_dir: Path) -> Ed25519PublicKey:
    path = Path(state_dir) / "audit" / "checkpoint.pub"
    try:
        return load_public_key(path)
    except (OSError, ValueError) as exc:
        raise SignatureError(f"cannot read {path}: {exc}") from None


def verify_bytes(data: bytes, signature: str, key: Ed25519PublicKey) -> None:
    try:
        key.verify(base64.b64decode(signature.strip(), validate=True), data)
    except (InvalidSignature, ValueError):
        raise SignatureError("signature does not verify") from None


def verify_report(report: dict[str, Any], key: Ed25519PublicKey) -> None:
    """Raise :class:`SignatureError` unless the embedded signature verifies with ``key``."""
    sig = report.get("signature")
    if not isinstance(sig, dict) or not isinstance(sig.get("value"), str):
        raise SignatureError("the report carries no signature")
    if sig.get("keyId") != key_id(key):
        raise SignatureError("the report was signed with another key")
    verify_bytes(canonical_report(report), sig["value"], key)
