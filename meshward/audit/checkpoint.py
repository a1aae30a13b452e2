"""Signed checkpoints: the control plane vouches for the head of every chain it stores.

A checkpoint is one JSON line in ``<state>/audit/checkpoints.jsonl``::

    {"n": 7, "time": "...", "prev": H(checkpoint 6), "count": 1234,
     "chains": {"<slug>": {"source": ..., "chain": ..., "seq": 120, "hash": ...}}, "sig": "..."}

``chains`` lists the chains that moved since the checkpoint before (whose digest is ``prev``),
``count`` the records of every chain. ``sig`` is an Ed25519 signature (base64) over the canonical JSON of everything else, made
with ``<state>/audit/checkpoint.key`` (0600, never leaves the control plane); the public half
is ``checkpoint.pub``. Whoever rewrites a chain and recomputes every hash still cannot make
its head match a signed checkpoint.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from meshward.audit.chain import GENESIS, canonical_json

__all__ = [
    "CheckpointError",
    "CheckpointSigner",
    "checkpoint_digest",
    "load_public_key",
    "verify_checkpoint",
]


class CheckpointError(ValueError):
    """A checkpoint line is malformed or its signature does not verify."""


def checkpoint_digest(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError(f"{path}: not an Ed25519 public key")
    return key


def verify_checkpoint(line: bytes, key: Ed25519PublicKey) -> dict[str, Any]:
    """Parse one checkpoint line and check its signature; raise :class:`CheckpointError`."""
    try:
        data = json.loads(line)
        sig = base64.b64decode(data.pop("sig"), validate=True)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"malformed checkpoint: {exc}") from None
    try:
        key.verify(sig, canonical_json(data))
    except InvalidSignature:
        raise CheckpointError(f"checkpoint {data.get('n')}: signature does not verify") from None
    if not isinstance(data.get("chains"), dict):
        raise CheckpointError("checkpoint without chains")
    return dict(data)


class CheckpointSigner:
    """Holds the control plane's checkpoint key (made on first use, 0600)."""

    def __init__(self, directory: Path) -> None:
        self.key_path = directory / "checkpoint.key"
        self.pub_path = directory / "checkpoint.pub"
        if self.key_path.exists():
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise CheckpointError(f"{self.key_path}: not an Ed25519 private key")
            self._key = key
        else:
            self._key = Ed25519PrivateKey.generate()
            pem = self._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, pem)
                os.fsync(fd)
            finally:
                os.close(fd)
        if not self.pub_path.exists():
            self.pub_path.write_bytes(
                self._key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )

    def sign(self, n: int, time: str, prev: str | None, count: int, chains: dict[str, Any]) -> bytes:
        body = {"n": n, "time": time, "prev": prev or GENESIS, "count": count, "chains": chains}
        sig = base64.b64encode(self._key.sign(canonical_json(body))).decode()
        return canonical_json({**body, "sig": sig}) + b"\n"
