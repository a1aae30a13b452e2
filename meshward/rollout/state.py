"""Rollout state in SQLite (``<state>/rollouts.db``): it survives a control-plane restart.

One row per ``ModelRoute`` (``namespace/name``) holding its :class:`RolloutStatus` as JSON. A
short-lived connection per operation, WAL mode, as the config store.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

from meshward.config.sqlite import connect, initialize
from meshward.rollout.analysis import RolloutStatus

__all__ = ["RolloutStore"]

_SCHEMA = "CREATE TABLE IF NOT EXISTS rollouts (route TEXT PRIMARY KEY, doc TEXT NOT NULL)"


class RolloutStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        initialize(path, _SCHEMA)

    def _connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return connect(self.path)

    def load(self) -> dict[str, RolloutStatus]:
        with self._connect() as db:
            rows = db.execute("SELECT route, doc FROM rollouts").fetchall()
        return {route: RolloutStatus.from_json(json.loads(doc)) for route, doc in rows}

    def save(self, status: RolloutStatus) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO rollouts VALUES (?, ?) ON CONFLICT(route) DO UPDATE SET doc = excluded.doc",
                (status.route, json.dumps(status.to_json())),
            )

    def delete(self, route: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM rollouts WHERE route = ?", (route,))
