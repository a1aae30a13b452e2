"""The issuance ledger: every SVID the authority signed and every request it refused (SQLite).

Tables (in ``meshward.db``, created on first use):

- ``identity_svids``: serial (hex), identity (SPIFFE URI), not_before, not_after, issued_at,
  via (``token`` | ``renew`` | ``mint`` | ``operator``), revoked flag and time.
- ``identity_refusals``: time, claimed identity (what the request asked for, if readable),
  reason, via. A rolling table: at most :data:`MAX_REFUSALS` rows (the oldest go), the reason
  and the claimed identity cut to :data:`MAX_REFUSAL_TEXT` characters — a refusal is what an
  unauthenticated caller can make us store.

Times are ISO 8601 UTC strings (``2026-11-30T10:00:00Z``), which sort as they read.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass

from cryptography import x509

from meshward.identity.spiffe import SpiffeId

__all__ = [
    "MAX_REFUSALS",
    "MAX_REFUSAL_TEXT",
    "RefusalRecord",
    "SvidLedger",
    "SvidRecord",
    "iso",
    "serial_hex",
]

MAX_REFUSALS = 10_000
MAX_REFUSAL_TEXT = 512

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identity_svids (
    serial      TEXT PRIMARY KEY,
    identity    TEXT NOT NULL,
    not_before  TEXT NOT NULL,
    not_after   TEXT NOT NULL,
    issued_at   TEXT NOT NULL,
    via         TEXT NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0,
    revoked_at  TEXT
);
CREATE INDEX IF NOT EXISTS identity_svids_identity ON identity_svids (identity);
CREATE TABLE IF NOT EXISTS identity_refusals (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    at               TEXT NOT NULL,
    claimed_identity TEXT,
    reason           TEXT NOT NULL,
    via              TEXT NOT NULL
);
"""


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def serial_hex(serial: int) -> str:
    """A certificate serial as openssl prints it, lower case and without colons."""
    return format(serial, "x")


def _normalize_serial(serial: str) -> str:
    """Accept ``AB:CD:...`` and upper case as openssl may print them."""
    return serial.strip().lower().replace(":", "").lstrip("0") or "0"


@dataclass(frozen=True, slots=True)
class SvidRecord:
    serial: str
    identity: str
    not_before: str
    not_after: str
    issued_at: str
    via: str
    revoked: bool


@dataclass(frozen=True, slots=True)
class RefusalRecord:
    at: str
    claimed_identity: str | None
    reason: str
    via: str


class SvidLedger:
    """Reads and writes the two identity tables through a caller-owned connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        conn.executescript(_SCHEMA)

    def record_issued(
        self, cert: x509.Certificate, identity: SpiffeId, via: str, commit: bool = True
    ) -> SvidRecord:
        """Record a signed SVID (``commit=False``: inside the caller's open transaction)."""
        rec = SvidRecord(
            serial=serial_hex(cert.serial_number),
            identity=identity.uri,
            not_before=iso(cert.not_valid_before_utc),
            not_after=iso(cert.not_valid_after_utc),
            issued_at=iso(dt.datetime.now(dt.UTC)),
            via=via,
            revoked=False,
        )
        self._conn.execute(
            "INSERT INTO identity_svids (serial, identity, not_before, not_after, issued_at, via)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (rec.serial, rec.identity, rec.not_before, rec.not_after, rec.issued_at, rec.via),
        )
        if commit:
            self._conn.commit()
        return rec

    def record_refusal(self, claimed_identity: str | None, reason: str, via: str) -> None:
        claimed = None if claimed_identity is None else claimed_identity[:MAX_REFUSAL_TEXT]
        with self._conn:
            cur = self._conn.execute(
                "INSERT INTO identity_refusals (at, claimed_identity, reason, via) VALUES (?, ?, ?, ?)",
                (iso(dt.datetime.now(dt.UTC)), claimed, reason[:MAX_REFUSAL_TEXT], via),
            )
            newest = cur.lastrowid or 0
            if newest > MAX_REFUSALS and newest % 100 == 0:  # rolling: trim now and then, not per row
                self._conn.execute("DELETE FROM identity_refusals WHERE id <= ?", (newest - MAX_REFUSALS,))

    def revoke(self, serial: str) -> bool:
        """Mark a certificate revoked; False when the serial is unknown."""
        with self._conn:
            cur = self._conn.execute(
                "UPDATE identity_svids SET revoked = 1, revoked_at = ? WHERE serial = ? AND revoked = 0",
                (iso(dt.datetime.now(dt.UTC)), _normalize_serial(serial)),
            )
        return cur.rowcount == 1

    def revoke_identity(self, identity: str) -> list[str]:
        """Revoke every unexpired, unrevoked certificate of ``identity`` (a SPIFFE URI); their serials."""
        now = iso(dt.datetime.now(dt.UTC))
        with self._conn:
            rows = self._conn.execute(
                "SELECT serial FROM identity_svids WHERE identity = ? AND revoked = 0 AND not_after > ?",
                (identity, now),
            ).fetchall()
            self._conn.executemany(
                "UPDATE identity_svids SET revoked = 1, revoked_at = ? WHERE serial = ?",
                [(now, r[0]) for r in rows],
            )
        return [str(r[0]) for r in rows]

    def revoked_serials(self) -> list[str]:
        """Serials of revoked certificates that have not expired (what handshakes must refuse)."""
        rows = self._conn.execute(
            "SELECT serial FROM identity_svids WHERE revoked = 1 AND not_after > ? ORDER BY serial",
            (iso(dt.datetime.now(dt.UTC)),),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def is_revoked(self, serial: str) -> bool:
        row = self._conn.execute(
            "SELECT revoked FROM identity_svids WHERE serial = ?", (_normalize_serial(serial),)
        ).fetchone()
        return bool(row and row[0])

    def certificates(self, identity: str | None = None, limit: int = 1000) -> list[SvidRecord]:
        """Issued certificates, newest first."""
        sql = "SELECT serial, identity, not_before, not_after, issued_at, via, revoked FROM identity_svids"
        params: tuple[object, ...] = ()
        if identity is not None:
            sql += " WHERE identity = ?"
            params = (identity,)
        sql += " ORDER BY issued_at DESC, rowid DESC LIMIT ?"
        rows = self._conn.execute(sql, (*params, limit)).fetchall()
        return [SvidRecord(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]

    def refusals(self, limit: int = 1000) -> list[RefusalRecord]:
        """Refused requests, newest first."""
        rows = self._conn.execute(
            "SELECT at, claimed_identity, reason, via FROM identity_refusals ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [RefusalRecord(r[0], r[1], r[2], r[3]) for r in rows]

    def clear(self) -> None:
        """Forget every record (``init --force`` makes a new authority)."""
        with self._conn:
            self._conn.execute("DELETE FROM identity_svids")
            self._conn.execute("DELETE FROM identity_refusals")
