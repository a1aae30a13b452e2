"""API keys for callers with no identity provider (LiteLLM's and Kong's virtual keys).

A key is ``mwk_`` + 43 URL-safe characters (256 random bits). It is printed once by
``meshward apikey create``; the mesh keeps only its SHA-256 (an ``ApiKey`` resource), so neither
the control plane's store nor a sidecar's cached config can give a key back. With 256 bits of
entropy a plain SHA-256 is enough (no password stretching is needed for a random secret), and a
lookup is one hash and one dict access per request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = ["KEY_PREFIX", "ApiKeyEntry", "ApiKeyTable", "default_principal", "hash_key", "new_key"]

KEY_PREFIX: Final = "mwk_"


def new_key() -> str:
    """A fresh API key (shown once, never stored)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def default_principal(name: str) -> str:
    """The request principal of key ``name`` unless ``--principal`` says otherwise."""
    return f"apikeys/{name}"


@dataclass(frozen=True, slots=True)
class ApiKeyEntry:
    name: str  # "ns/name" of the ApiKey resource
    principal: str
    expires: float | None  # epoch seconds
    revoked: bool


class ApiKeyTable:
    """Every key the mesh knows, by hash. ``authenticate`` says who a key is, or why it is not."""

    def __init__(self, entries: Iterable[tuple[str, ApiKeyEntry]]) -> None:
        self._by_hash = dict(entries)

    def __len__(self) -> int:
        return len(self._by_hash)

    def authenticate(self, key: str, now: float) -> tuple[ApiKeyEntry | None, str]:
        """(entry, "") for a valid key, else (None, reason)."""
        entry = self._by_hash.get(hash_key(key))
        if entry is None:
            return None, "unknown API key"
        if entry.revoked:
            return None, f"API key {entry.name} is revoked"
        if entry.expires is not None and now >= entry.expires:
            return None, f"API key {entry.name} expired"
        return entry, ""


def epoch(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()
