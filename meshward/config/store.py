"""The config store: numbered generations of the whole resource set, in SQLite.

Every accepted apply writes a new generation holding the *full* resource set (so a rollback or a
restarted control plane never replays a chain of diffs), who applied it, when, and what changed
(``created`` / ``configured`` / ``unchanged`` / ``deleted`` per resource). An apply that changes
nothing writes no generation. ``rollback N`` writes a new generation equal to generation N.

The store also keeps what the control plane learns from sidecars: their registered inbound
endpoints (so a restarted control plane serves the services table at once) and their last
ACK/NACK per generation (so ``meshward status`` shows a rejected config and why).

One short-lived SQLite connection per operation (WAL mode): the control plane's handler threads
and the CLI (offline) may use the same file; writes are serialized by SQLite's lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from meshward.config.reuse import reused
from meshward.config.sqlite import initialize, open_connection

if TYPE_CHECKING:
    from meshward.resources import Resource

__all__ = [
    "Ack",
    "ApplyRefused",
    "ApplyResult",
    "Change",
    "ConfigStore",
    "GenerationInfo",
    "SidecarRecord",
    "canonical",
    "resolve_kind",
]

Action = Literal["created", "configured", "unchanged", "deleted"]
Key = tuple[str, str, str]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    generation INTEGER PRIMARY KEY,
    applied_by TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    source TEXT NOT NULL,
    summary TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS resources (
    generation INTEGER NOT NULL REFERENCES generations(generation),
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (generation, kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS sidecars (
    sidecar TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    workload TEXT NOT NULL,
    identity TEXT NOT NULL,
    inbound TEXT NOT NULL,
    registered_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS acks (
    sidecar TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL
);
"""


class ApplyRefused(ValueError):
    """The resource set is valid YAML/schema but cannot be applied (the applier's fault)."""


@dataclass(frozen=True, slots=True)
class Change:
    kind: str
    namespace: str
    name: str
    action: Action
    diff: str = ""  # unified diff of the YAML documents, for "configured"

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name, "action": self.action}

    def __str__(self) -> str:
        return f"{self.kind.lower()} {self.namespace}/{self.name} {self.action}"


@dataclass(frozen=True, slots=True)
class ApplyResult:
    generation: int  # the new generation, or the current one if nothing changed
    changed: bool
    changes: tuple[Change, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "changed": self.changed,
            "changes": [c.to_json() | {"diff": c.diff} for c in self.changes],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApplyResult:
        changes = tuple(
            Change(c["kind"], c["namespace"], c["name"], c["action"], c.get("diff", ""))
            for c in data["changes"]
        )
        return cls(int(data["generation"]), bool(data["changed"]), changes)


@dataclass(frozen=True, slots=True)
class GenerationInfo:
    generation: int
    applied_by: str
    applied_at: str
    source: str  # "apply" or "rollback to N"
    summary: dict[str, int]  # action → count

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "applied_by": self.applied_by,
            "applied_at": self.applied_at,
            "source": self.source,
            "summary": self.summary,
        }


@dataclass(frozen=True, slots=True)
class SidecarRecord:
    sidecar: str
    namespace: str
    workload: str
    identity: str
    inbound: str


@dataclass(frozen=True, slots=True)
class Ack:
    sidecar: str
    generation: int
    status: Literal["ACK", "NACK"]
    reason: str
    at: str

    def summary(self) -> dict[str, Any]:
        """What status documents show of an ack: generation, status and reason."""
        return {"generation": self.generation, "status": self.status, "reason": self.reason}


def canonical(resource: Resource[Any]) -> str:
    """The stored form of a resource: its document as sorted JSON (equal docs, equal text)."""
    return json.dumps(resource.to_doc(), sort_keys=True, separators=(",", ":"))


def _yaml(doc: str) -> list[str]:
    text: str = yaml.safe_dump(json.loads(doc), sort_keys=False)
    return text.splitlines(keepends=True)


def resolve_kind(text: str) -> str:
    """``authorizationpolicy``, ``AuthorizationPolicies``, ``workloads`` → the kind name."""
    from meshward.resources import KINDS  # the resource models load when a resource is read

    wanted = text.strip().lower()
    for kind in KINDS:
        low = kind.lower()
        plural = low[:-1] + "ies" if low.endswith("y") else low + "s"
        if wanted in (low, plural):
            return kind
    raise KeyError(f"unknown kind {text!r} (known: {', '.join(sorted(KINDS))})")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(doc: str) -> Resource[Any]:
    from meshward.resources import KINDS

    data = json.loads(doc)
    return KINDS[data["kind"]].model_validate(data)


class ConfigStore:
    """Generations of the resource set in one SQLite file."""

    def __init__(self, path: Path, trust_domain: str | None = None) -> None:
        self.path = path
        self.trust_domain = trust_domain
        self._write_lock = threading.Lock()
        self._local = threading.local()  # one kept connection per thread (see _connect)
        # The resources of the last read, by their stored text: the next generation differs in a
        # few documents, so only those are validated again (resources are frozen: safe to share).
        self._parsed: dict[str, Resource[Any]] = {}
        initialize(path, _SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, opened on first use and kept while the thread lives: the
        control plane answers every sidecar's watch and ACK on that sidecar's connection thread,
        and opening SQLite per call was most of an ACK's cost. Threads never share one."""
        held: tuple[int, sqlite3.Connection] | None = getattr(self._local, "db", None)
        if held is None or held[0] != os.getpid():  # a forked child never uses its parent's
            held = self._local.db = (os.getpid(), open_connection(self.path))
        db = held[1]
        try:
            yield db
        finally:
            if db.in_transaction:  # never hand a half-done transaction to the next use
                db.execute("ROLLBACK")

    # -- reading -----------------------------------------------------------------------------

    def generation(self) -> int:
        """The current generation (0 before the first apply)."""
        with self._connect() as db:
            row = db.execute("SELECT MAX(generation) FROM generations").fetchone()
        return int(row[0] or 0)

    def _docs(self, db: sqlite3.Connection, generation: int) -> dict[Key, str]:
        rows = db.execute(
            "SELECT kind, namespace, name, doc FROM resources WHERE generation = ?", (generation,)
        ).fetchall()
        return {(k, ns, n): doc for k, ns, n, doc in rows}

    def resources(self, generation: int | None = None) -> list[Resource[Any]]:
        """Every resource of a generation (default: the current one), in a stable order."""
        with self._connect() as db:
            gen = generation if generation is not None else self._current(db)
            if generation is not None and not self._exists(db, generation):
                raise KeyError(f"no generation {generation}")
            docs = self._docs(db, gen)
        known = self._parsed
        parsed: dict[str, Resource[Any]] = {}
        out = [reused(docs[key], docs[key], _parse, known, parsed) for key in sorted(docs)]
        self._parsed = parsed  # one generation's worth (threads: each read replaces it whole)
        return out

    def get(self, kind: str, name: str | None = None, namespace: str | None = None) -> list[Resource[Any]]:
        """Resources of one kind, optionally one name (and namespace); ``kind`` may be a plural."""
        kind = resolve_kind(kind)
        return [
            r
            for r in self.resources()
            if r.kind == kind
            and (name is None or r.metadata.name == name)
            and (namespace is None or r.metadata.namespace == namespace)
        ]

    def history(self) -> list[GenerationInfo]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT generation, applied_by, applied_at, source, summary FROM generations ORDER BY generation"
            ).fetchall()
        return [GenerationInfo(g, by, at, src, json.loads(summary)) for g, by, at, src, summary in rows]

    @staticmethod
    def _current(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT MAX(generation) FROM generations").fetchone()[0] or 0)

    @staticmethod
    def _exists(db: sqlite3.Connection, generation: int) -> bool:
        row = db.execute("SELECT 1 FROM generations WHERE generation = ?", (generation,)).fetchone()
        return row is not None

    # -- planning and writing ----------------------------------------------------------------

    def _check(self, resources: Iterable[Resource[Any]], current: Iterable[Key] = ()) -> None:
        existing = [key for key in current if key[0] == "Mesh"]
        for r in resources:
            if r.kind == "Mesh" and existing and r.key not in existing:
                _, _, name = existing[0]
                raise ApplyRefused(
                    f"{r.ref}: this mesh already has a Mesh resource, {name!r}, and a mesh has one "
                    f"(change that one: metadata.name {name!r}; a different mesh needs its own --state)"
                )
            if r.kind == "Mesh" and self.trust_domain is not None:
                td = getattr(r.spec, "trust_domain", self.trust_domain)
                if td != self.trust_domain:
                    raise ApplyRefused(
                        f"{r.ref}: trustDomain {td!r} differs from this mesh's {self.trust_domain!r} "
                        "(the trust domain is fixed by `meshward init`)"
                    )

    @staticmethod
    def _diff(old: dict[Key, str], new: dict[Key, str], prune: bool) -> list[Change]:
        changes: list[Change] = []
        for key in sorted(new):
            if key not in old:
                changes.append(Change(*key, "created"))
            elif old[key] == new[key]:
                changes.append(Change(*key, "unchanged"))
            else:
                diff = "".join(
                    difflib.unified_diff(_yaml(old[key]), _yaml(new[key]), "current", "applied", n=2)
                )
                changes.append(Change(*key, "configured", diff))
        if prune:
            changes.extend(Change(*key, "deleted") for key in sorted(old) if key not in new)
        return changes

    def plan(self, resources: Sequence[Resource[Any]]) -> list[Change]:
        """What :meth:`apply` would change (``apply --dry-run``); nothing is written."""
        with self._connect() as db:
            old = self._docs(db, self._current(db))
        self._check(resources, old)
        return self._diff(old, {r.key: canonical(r) for r in resources}, prune=False)

    def apply(self, resources: Sequence[Resource[Any]], who: str, source: str = "apply") -> ApplyResult:
        """Create or update ``resources`` (others stay as they are) as one new generation."""
        with self._write_lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                current = self._current(db)
                old = self._docs(db, current)
                self._check(resources, old)
                applied = {r.key: canonical(r) for r in resources}
                changes = self._diff(old, applied, prune=False)
                result = self._write(db, current, old | applied, changes, who, source)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return result

    def remove(self, keys: Sequence[Key], who: str, source: str = "remove") -> ApplyResult:
        """Delete the resources ``keys`` (others stay as they are) as one new generation."""
        with self._write_lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                current = self._current(db)
                old = self._docs(db, current)
                kept = {key: doc for key, doc in old.items() if key not in set(keys)}
                changes = self._diff(old, kept, prune=True)
                result = self._write(db, current, kept, changes, who, source)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return result

    def rollback(self, generation: int, who: str) -> ApplyResult:
        """Write a new generation whose resource set equals ``generation``'s."""
        with self._write_lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                if not self._exists(db, generation):
                    raise KeyError(f"no generation {generation}")
                current = self._current(db)
                target = self._docs(db, generation)
                changes = self._diff(self._docs(db, current), target, prune=True)
                result = self._write(db, current, target, changes, who, f"rollback to {generation}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return result

    def delete(self, keys: Sequence[Key], who: str) -> ApplyResult:
        """Write a new generation without the resources ``keys`` (kind, namespace, name).

        A key that is not in the current generation refuses the whole delete (KeyError naming
        it); a rollback to the previous generation brings the resources back."""
        with self._write_lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                current = self._current(db)
                old = self._docs(db, current)
                missing = [key for key in keys if key not in old]
                if missing:
                    kind, ns, name = missing[0]
                    raise KeyError(f"{kind} {ns}/{name} not found in generation {current}")
                target = {key: doc for key, doc in old.items() if key not in set(keys)}
                changes = self._diff(old, target, prune=True)
                result = self._write(db, current, target, changes, who, "delete")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return result

    def compare(self, before: int, after: int) -> list[Change]:
        """What changed from generation ``before`` to ``after`` (unchanged resources left out);
        generation 0 is the empty set. KeyError when a generation does not exist."""
        with self._connect() as db:
            docs = []
            for gen in (before, after):
                if gen and not self._exists(db, gen):
                    raise KeyError(f"no generation {gen}")
                docs.append(self._docs(db, gen) if gen else {})
        return [c for c in self._diff(docs[0], docs[1], prune=True) if c.action != "unchanged"]

    @staticmethod
    def _write(
        db: sqlite3.Connection,
        current: int,
        docs: dict[Key, str],
        changes: list[Change],
        who: str,
        source: str,
    ) -> ApplyResult:
        if current and all(c.action == "unchanged" for c in changes):
            return ApplyResult(current, False, tuple(changes))
        gen = current + 1
        summary: dict[str, int] = {}
        for c in changes:
            summary[c.action] = summary.get(c.action, 0) + 1
        db.execute(
            "INSERT INTO generations VALUES (?, ?, ?, ?, ?)", (gen, who, _now(), source, json.dumps(summary))
        )
        db.executemany(
            "INSERT INTO resources VALUES (?, ?, ?, ?, ?)", [(gen, *key, doc) for key, doc in docs.items()]
        )
        return ApplyResult(gen, True, tuple(changes))

    # -- what sidecars report ----------------------------------------------------------------

    def register_sidecar(self, record: SidecarRecord) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO sidecars VALUES (?, ?, ?, ?, ?, ?)",
                (record.sidecar, record.namespace, record.workload, record.identity, record.inbound, _now()),
            )

    def unregister_sidecar(self, sidecar: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM sidecars WHERE sidecar = ?", (sidecar,))
            db.execute("DELETE FROM acks WHERE sidecar = ?", (sidecar,))

    def sidecars(self) -> list[SidecarRecord]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT sidecar, namespace, workload, identity, inbound FROM sidecars ORDER BY sidecar"
            ).fetchall()
        return [SidecarRecord(*row) for row in rows]

    def record_ack(
        self, sidecar: str, generation: int, ok: bool, reason: str = "", *, workload: str = "", limit: int = 0
    ) -> int:
        """Record (replace) ``sidecar``'s answer to ``generation``; 0 when recorded.

        With ``limit``: a sidecar not reporting yet is refused when ``workload`` (its NS/NAME) has
        ``limit`` sidecars reporting already; the answer is then that number. One connection and
        indexed lookups: every sidecar ACKs every generation."""
        with self._connect() as db:
            if limit and db.execute("SELECT 1 FROM acks WHERE sidecar = ?", (sidecar,)).fetchone() is None:
                prefix = workload + "#"
                (count,) = db.execute(
                    "SELECT COUNT(*) FROM acks WHERE sidecar = ? OR substr(sidecar, 1, ?) = ?",
                    (workload, len(prefix), prefix),
                ).fetchone()
                if count >= limit:
                    return int(count)
            db.execute(
                "INSERT OR REPLACE INTO acks VALUES (?, ?, ?, ?, ?)",
                (sidecar, generation, "ACK" if ok else "NACK", reason[:500], _now()),
            )
        return 0

    def acks(self) -> dict[str, Ack]:
        with self._connect() as db:
            rows = db.execute("SELECT sidecar, generation, status, reason, at FROM acks").fetchall()
        return {row[0]: Ack(*row) for row in rows}
