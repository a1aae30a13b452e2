"""Join tokens: short-lived, few-use secrets that let a new workload get its first SVID.

An operator makes one for exactly one identity (``meshward token create --id ml/fraud``);
the workload sends it with its CSR. Only a SHA-256 hash of the token is stored
(``identity_join_tokens`` in ``meshward.db``), and a use is consumed atomically in one
conditional ``UPDATE``, so two concurrent requests can never both spend the last use.
Tokens never appear in logs or refusal records.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import sqlite3

from meshward.identity.authority import CsrRefused
from meshward.identity.ledger import iso
from meshward.identity.spiffe import SpiffeId

__all__ = [
    "DEFAULT_TOKEN_TTL",
    "MAX_TOKEN_TTL",
    "MAX_TOKEN_USES",
    "TOKEN_PREFIX",
    "JoinTokens",
    "TokenRefused",
]

DEFAULT_TOKEN_TTL = dt.timedelta(minutes=10)
MAX_TOKEN_TTL = dt.timedelta(days=30)
MAX_TOKEN_USES = 10_000
TOKEN_PREFIX = "mwjt_"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identity_join_tokens (
    token_hash  TEXT PRIMARY KEY,
    identity    TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  REAL NOT NULL,
    uses_total  INTEGER NOT NULL,
    uses_left   INTEGER NOT NULL
);
"""


class TokenRefused(CsrRefused):
    """The join token does not authorize this request (the requester's fault); see ``reason``."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class JoinTokens:
    """Creates and consumes join tokens through a caller-owned SQLite connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        conn.executescript(_SCHEMA)

    def create(
        self,
        identity: SpiffeId,
        ttl: dt.timedelta = DEFAULT_TOKEN_TTL,
        uses: int = 1,
        now: dt.datetime | None = None,
    ) -> str:
        """A new token for exactly ``identity``; the caller shows it once, we keep only its hash.

        ``now`` (default: the current time) is when its lifetime starts.
        """
        if not dt.timedelta(0) < ttl <= MAX_TOKEN_TTL:
            raise ValueError(f"token lifetime must be more than 0 and at most {MAX_TOKEN_TTL.days} days")
        if not 1 <= uses <= MAX_TOKEN_USES:
            raise ValueError(f"token uses must be between 1 and {MAX_TOKEN_USES}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = now or dt.datetime.now(dt.UTC)
        with self._conn:
            self._conn.execute(
                "INSERT INTO identity_join_tokens"
                " (token_hash, identity, created_at, expires_at, uses_total, uses_left)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (_hash(token), identity.uri, iso(now), (now + ttl).timestamp(), uses, uses),
            )
        return token

    def consume(self, token: str, identity: SpiffeId, commit: bool = True) -> None:
        """Spend one use of ``token`` for ``identity`` or raise :class:`TokenRefused` saying why.

        With ``commit=False`` the use is spent inside the caller's open transaction, which then
        commits it together with what the token bought (or rolls both back).
        """
        digest = _hash(token.strip())
        now = dt.datetime.now(dt.UTC).timestamp()
        cur = self._conn.execute(
            "UPDATE identity_join_tokens SET uses_left = uses_left - 1"
            " WHERE token_hash = ? AND identity = ? AND uses_left > 0 AND expires_at > ?",
            (digest, identity.uri, now),
        )
        if commit:
            self._conn.commit()
        if cur.rowcount == 1:
            return
        row = self._conn.execute(
            "SELECT identity, expires_at, uses_total, uses_left FROM identity_join_tokens WHERE token_hash = ?",
            (digest,),
        ).fetchone()
        if row is None:
            raise TokenRefused("join token is unknown")
        token_identity, expires_at, uses_total, uses_left = row
        if token_identity != identity.uri:
            raise TokenRefused(f"join token is for {token_identity}, but the CSR asks for {identity.uri}")
        if expires_at <= now:
            when = iso(dt.datetime.fromtimestamp(expires_at, dt.UTC))
            raise TokenRefused(f"join token expired at {when}")
        if uses_left <= 0:
            plural = "use" if uses_total == 1 else "uses"
            raise TokenRefused(f"join token was already used ({uses_total} {plural} allowed)")
        raise TokenRefused("join token could not be consumed")  # pragma: no cover - a racing update

    def prune(self, older_than: dt.timedelta = dt.timedelta(days=7)) -> int:
        """Drop tokens that expired more than ``older_than`` ago; returns how many."""
        cutoff = (dt.datetime.now(dt.UTC) - older_than).timestamp()
        with self._conn:
            cur = self._conn.execute("DELETE FROM identity_join_tokens WHERE expires_at < ?", (cutoff,))
        return cur.rowcount

    def clear(self) -> None:
        with self._conn:
            self._conn.execute("DELETE FROM identity_join_tokens")
