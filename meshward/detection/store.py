"""Alerts, quarantines and the delivery outbox, durable in ``<state>/detection.db`` (SQLite, 0600).

- ``alerts``: one row per alert (see :class:`~meshward.detection.signals.Alert`); updated in place
  when the correlator folds a repeated signal into it.
- ``quarantines``: the generated DENY policies, their expiry and what ended them.
- ``outbox``: one row per (alert, sink) still to deliver to a webhook. A sink that is down keeps
  its rows (retried with backoff) and never blocks detection or traffic; a row leaves the outbox
  only once the sink answered 2xx (at-least-once).

One short-lived connection per operation (WAL): the control plane's threads and the CLI (when no
control plane runs) may share the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshward.config.sqlite import connect, initialize
from meshward.detection.signals import Alert
from meshward.identity.ledger import iso

__all__ = ["DetectionStore", "OutboxItem", "QuarantineRecord"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    updated_ts REAL NOT NULL,
    detector TEXT NOT NULL,
    subject TEXT NOT NULL,
    state TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_key ON alerts (detector, subject, seq);
CREATE INDEX IF NOT EXISTS alerts_subject ON alerts (subject, seq);
CREATE TABLE IF NOT EXISTS quarantines (
    id TEXT PRIMARY KEY,
    alert_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    created_ts REAL NOT NULL,
    expires_ts REAL NOT NULL,
    state TEXT NOT NULL,
    ended_by TEXT NOT NULL DEFAULT '',
    generation INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ts REAL NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    id: str
    alert_id: str
    subject: str
    namespace: str  # of the generated AuthorizationPolicy
    name: str
    created_ts: float
    expires_ts: float
    state: str  # active | released | expired | dry-run
    ended_by: str
    generation: int

    def to_json(self) -> dict[str, Any]:
        def at(ts: float) -> str:
            return iso(dt.datetime.fromtimestamp(ts, dt.UTC))

        return {
            "id": self.id,
            "alert": self.alert_id,
            "subject": self.subject,
            "policy": f"{self.namespace}/{self.name}",
            "created": at(self.created_ts),
            "expires": at(self.expires_ts),
            "state": self.state,
            "ended_by": self.ended_by,
            "generation": self.generation,
        }


@dataclass(frozen=True, slots=True)
class OutboxItem:
    seq: int
    sink: str
    payload: dict[str, Any]
    attempts: int


class DetectionStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        initialize(path, _SCHEMA)

    def _connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return connect(self.path)

    # -- alerts ------------------------------------------------------------------------------
    def save(self, alert: Alert, updated_ts: float) -> None:
        doc = json.dumps(alert.to_json(), sort_keys=True)
        with self._lock, self._connect() as db:
            db.execute(
                "INSERT INTO alerts (id, updated_ts, detector, subject, state, doc) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET updated_ts=excluded.updated_ts, state=excluded.state, "
                "doc=excluded.doc",
                (alert.id, updated_ts, alert.detector, alert.subject, alert.state, doc),
            )

    @staticmethod
    def _alert(doc: str, updated_ts: float) -> tuple[Alert, float]:
        data = json.loads(doc)
        return Alert(**data), updated_ts

    def latest(self, detector: str, subject: str) -> tuple[Alert, float] | None:
        """The newest alert for (detector, subject) and when it was last updated."""
        with self._connect() as db:
            row = db.execute(
                "SELECT doc, updated_ts FROM alerts WHERE detector = ? AND subject = ? ORDER BY seq DESC LIMIT 1",
                (detector, subject),
            ).fetchone()
        return None if row is None else self._alert(row[0], row[1])

    def get(self, alert_id: str) -> Alert | None:
        with self._connect() as db:
            row = db.execute("SELECT doc, updated_ts FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return None if row is None else self._alert(row[0], row[1])[0]

    def alerts(
        self, subject: str | None = None, since_ts: float | None = None, limit: int = 1000
    ) -> list[Alert]:
        """Alerts newest first; ``since_ts``: updated at or after that Unix time."""
        query = "SELECT doc, updated_ts FROM alerts WHERE 1=1"
        args: list[Any] = []
        if subject is not None:
            query += " AND subject = ?"
            args.append(subject)
        if since_ts is not None:
            query += " AND updated_ts >= ?"
            args.append(since_ts)
        query += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        with self._connect() as db:
            rows = db.execute(query, args).fetchall()
        return [self._alert(doc, ts)[0] for doc, ts in rows]

    def stale_open(self, before_ts: float) -> list[Alert]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT doc, updated_ts FROM alerts WHERE state != 'resolved' AND updated_ts < ?",
                (before_ts,),
            ).fetchall()
        return [self._alert(doc, ts)[0] for doc, ts in rows]

    def count(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])

    # -- quarantines -------------------------------------------------------------------------
    def save_quarantine(self, q: QuarantineRecord) -> None:
        with self._lock, self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO quarantines VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                dataclasses.astuple(q),
            )

    def quarantines(self, state: str | None = None) -> list[QuarantineRecord]:
        query = "SELECT * FROM quarantines"
        args: tuple[Any, ...] = ()
        if state is not None:
            query += " WHERE state = ?"
            args = (state,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY created_ts DESC", args).fetchall()
        return [QuarantineRecord(*row) for row in rows]

    def quarantine(self, quarantine_id: str) -> QuarantineRecord | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM quarantines WHERE id = ?", (quarantine_id,)).fetchone()
        return None if row is None else QuarantineRecord(*row)

    # -- outbox ------------------------------------------------------------------------------
    def enqueue(self, sink: str, payload: dict[str, Any]) -> None:
        with self._lock, self._connect() as db:
            db.execute("INSERT INTO outbox (sink, payload) VALUES (?, ?)", (sink, json.dumps(payload)))

    def due(self, now: float, limit: int = 100) -> list[OutboxItem]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT seq, sink, payload, attempts FROM outbox WHERE next_ts <= ? ORDER BY seq LIMIT ?",
                (now, limit),
            ).fetchall()
        return [OutboxItem(seq, sink, json.loads(payload), attempts) for seq, sink, payload, attempts in rows]

    def delivered(self, seq: int) -> None:
        with self._lock, self._connect() as db:
            db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def retry_later(self, seq: int, next_ts: float) -> None:
        with self._lock, self._connect() as db:
            db.execute("UPDATE outbox SET attempts = attempts + 1, next_ts = ? WHERE seq = ?", (next_ts, seq))

    def pending(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
