"""One SQLite file of the control plane's state (config generations, alerts, rollouts).

Created 0600 with its schema, in WAL mode; a connection per use or per thread (threads never share one).
WAL + ``synchronous=NORMAL``: a commit is atomic and survives a crash of the process; only an OS
crash may lose the last commits (never corrupt the file), and writes stay fast (no fsync each).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

__all__ = ["connect", "initialize", "open_connection"]


def initialize(path: Path, schema: str) -> None:
    """Create the file (0600, parents too) and its tables if they do not exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Create it 0600, but never open an existing database file outside SQLite: closing any
    # descriptor of a file drops the process's POSIX locks on it, which other connections rely on.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    with connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(schema)


def open_connection(path: Path) -> sqlite3.Connection:
    """A new connection (autocommit; ``BEGIN`` where a transaction is needed); the caller closes it."""
    db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    db.execute("PRAGMA synchronous=NORMAL")
    return db


@contextlib.contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection for one use, closed after it."""
    db = open_connection(path)
    try:
        yield db
    finally:
        db.close()
