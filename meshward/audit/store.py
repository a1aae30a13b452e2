"""The control plane's audit store: verifies each sidecar's chain, keeps it, signs checkpoints.

Layout (``<state>/audit``)::

    trail/chains.index       one JSON line per chain: slug, source (SPIFFE ID), chain id, time
                             (append-only; older stores wrote trail/chains.json, still read)
    trail/<slug>.jsonl       the records of one chain, exactly as the sidecar hashed them

A slug is the source escaped injectively (``/`` becomes ``+``, every other byte outside
``[A-Za-z0-9.-]`` becomes ``_XX``), a dot, and the chain id (no dot in it): two sources never
share a file. A source too long for a
file name keeps a readable prefix and the SHA-256 of the whole.
    checkpoints.jsonl        signed checkpoints (see :mod:`meshward.audit.checkpoint`)
    checkpoint.key / .pub    the checkpoint signing key (0600) and its public half

The control plane's HTTPS handler calls :meth:`AuditStore.ingest` with the caller's SPIFFE
ID from its verified client certificate (never from the body) and the NDJSON batch a
sidecar's :class:`~meshward.audit.shipper.AuditShipper` posted; the answer is the ack to send
back. Every event is checked (:mod:`meshward.audit.validate`) before anything is stored: one
malformed event refuses the batch (400), so nothing a sink cannot format enters the trail. Records are appended and fsynced before the ack, so an acknowledged record survives a
crash of the control plane. A batch that skips records (``409``, ``expected_seq`` tells the
sidecar where to resume) or does not link to the stored head is refused as a whole.

The control plane's own events (certificates issued or refused, config generations) go
through :meth:`AuditStore.record` into a chain of its own. Thread-safe (one lock).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshward.audit.chain import GENESIS, AuditRecord, ChainWriter, RecordError, parse_record_line
from meshward.audit.checkpoint import CheckpointSigner, checkpoint_digest
from meshward.audit.trail import append_index, last_line, read_index
from meshward.audit.validate import EventInvalid, check_event

__all__ = ["CONTROL_SOURCE", "AuditRejected", "AuditStore", "ChainInfo", "IngestAck"]

CONTROL_SOURCE = "meshward-control"  # the source name of the control plane's own chain
log = logging.getLogger("meshward.audit")
_SLUG_KEEP = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-")
_SLUG_MAX_SOURCE = 150
_MAX_BATCH_RECORDS = 10_000
#: New chains one source may open per minute (a sidecar opens one per spool: per start with a
#: fresh directory). Each is a file and an index line; this bounds what a sender can make us keep.
NEW_CHAINS_PER_MINUTE = 30


class AuditRejected(ValueError):
    """A batch the store refuses; ``status`` is the HTTP status to answer (the sender's fault)."""

    def __init__(self, status: int, message: str, expected_seq: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.expected_seq = expected_seq

    def to_json(self) -> dict[str, Any]:
        return {"error": str(self), "expected_seq": self.expected_seq}


@dataclass(frozen=True, slots=True)
class IngestAck:
    """What the control plane answers a sidecar: everything up to ``acked_seq`` is stored."""

    chain: str
    acked_seq: int
    stored: int

    def to_json(self) -> dict[str, Any]:
        return {"chain": self.chain, "acked_seq": self.acked_seq, "stored": self.stored}


@dataclass(slots=True)
class ChainInfo:
    slug: str
    source: str
    chain: str
    seq: int = 0
    head: str = GENESIS

    @property
    def path_name(self) -> str:
        return f"{self.slug}.jsonl"


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def slug_for(source: str, chain: str) -> str:
    """The trail file name (without ``.jsonl``) of ``chain`` from ``source``: injective."""
    base = source.removeprefix("spiffe://").encode("utf-8", "surrogatepass")
    escaped = "".join(chr(b) if b in _SLUG_KEEP else "+" if b == 0x2F else f"_{b:02x}" for b in base)
    if len(escaped) > _SLUG_MAX_SOURCE:  # "~" never appears in an escaped name: no overlap
        escaped = escaped[:100] + "~" + hashlib.sha256(base).hexdigest()[:40]
    return f"{escaped}.{chain}"


class AuditStore:
    """Per-chain trail files plus signed checkpoints under ``<state>/audit``."""

    def __init__(self, state_dir: Path, checkpoint_interval: float = 0.0) -> None:
        self.directory = Path(state_dir) / "audit"
        self.trail_dir = self.directory / "trail"
        self.trail_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.checkpoint_interval = checkpoint_interval
        self._lock = threading.RLock()
        # One writer per store: the control plane. Anyone else (a CLI, a test, a second control
        # plane by mistake) gets a read-only view and never writes a checkpoint or truncates.
        self._lock_fd = os.open(self.directory / "store.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.read_only = False
        except BlockingIOError:
            self.read_only = True
        self._release = weakref.finalize(self, os.close, self._lock_fd)  # closing frees the lock
        self._signer = None if self.read_only else CheckpointSigner(self.directory)
        self._chains: dict[str, ChainInfo] = {}
        self._by_source_chain: dict[tuple[str, str], ChainInfo] = {}
        self._last_checkpoint_at = 0.0
        self._checkpoint_n = 0
        self._checkpoint_prev: str | None = None
        self._checkpointed: dict[str, int] = {}
        self._control: ChainWriter | None = None
        self._control_chain: ChainInfo | None = None
        self._read_offsets: dict[tuple[str, int], int] = {}
        self._new_chains: dict[str, tuple[float, int]] = {}  # source -> (window start, chains opened)
        self._load()

    # -- loading ---------------------------------------------------------------------------------
    @property
    def checkpoints_path(self) -> Path:
        return self.directory / "checkpoints.jsonl"

    def _load(self) -> None:
        for slug, meta in read_index(self.trail_dir).items():
            info = ChainInfo(slug, meta["source"], meta["chain"])
            path = self.trail_dir / info.path_name
            if path.exists():
                line, good_size = last_line(path)
                if good_size != path.stat().st_size and not self.read_only:
                    os.truncate(path, good_size)  # torn by a crash mid-append: never acked
                if line is not None:
                    record = parse_record_line(line, check_hash=False)
                    info.seq, info.head = record.seq, record.hash
            self._add_chain(info)
        heads: dict[str, str] = {}
        if self.checkpoints_path.exists():  # replay: each checkpoint lists the chains it moved
            good = 0
            with open(self.checkpoints_path, "rb") as fh:
                for line in fh:
                    if not line.endswith(b"\n"):
                        break  # torn by a crash while signing: cut below, superseded by the next one
                    good += len(line)
                    data = json.loads(line)
                    self._checkpoint_n = int(data["n"])
                    self._checkpoint_prev = checkpoint_digest(line)
                    for slug, c in data["chains"].items():
                        self._checkpointed[slug] = int(c["seq"])
                        heads[slug] = str(c["hash"])
            if not self.read_only and good != self.checkpoints_path.stat().st_size:
                os.truncate(self.checkpoints_path, good)
        uncovered = [c for slug, c in self._chains.items() if self._checkpointed.get(slug, 0) != c.seq]
        if not self.read_only and uncovered:
            # Records stored just before a crash, not yet signed: sign them only if they extend
            # the signed heads as a chain; anything else is left for ``audit verify`` to name.
            broken = [c.slug for c in uncovered if not self._extends(c, heads.get(c.slug, GENESIS))]
            if broken:
                log.error("audit: not signing chains that do not extend their checkpoint: %s", broken)
            else:
                self.checkpoint(force=True)

    def _extends(self, info: ChainInfo, head: str) -> bool:
        seq = self._checkpointed.get(info.slug, 0)
        for record in self.read(info.slug, seq, limit=1 << 30):
            if record.seq != seq + 1 or record.prev != head or not record.hash_ok():
                return False
            seq, head = record.seq, record.hash
        return seq == info.seq

    def _add_chain(self, info: ChainInfo) -> None:
        self._chains[info.slug] = info
        self._by_source_chain[(info.source, info.chain)] = info

    def _new_chain(self, source: str, chain: str) -> ChainInfo:
        now = time.monotonic()
        start, opened = self._new_chains.get(source, (now, 0))
        if now - start >= 60.0:
            start, opened = now, 0
        if opened >= NEW_CHAINS_PER_MINUTE and source != CONTROL_SOURCE:
            raise AuditRejected(429, f"audit batch: more than {NEW_CHAINS_PER_MINUTE} new chains a minute")
        if len(self._new_chains) > 4096:
            self._new_chains.clear()
        self._new_chains[source] = (start, opened + 1)
        info = ChainInfo(slug_for(source, chain), source, chain)
        if info.slug in self._chains:  # only a hash collision (or a legacy name) could get here
            raise AuditRejected(409, "audit batch: chain name already taken; start a new chain")
        append_index(self.trail_dir, info.slug, source, chain, _now_iso())
        self._add_chain(info)
        return info

    # -- public API ------------------------------------------------------------------------------
    def chains(self) -> list[ChainInfo]:
        with self._lock:
            return [ChainInfo(c.slug, c.source, c.chain, c.seq, c.head) for c in self._chains.values()]

    def ingest(self, source: str, batch: bytes) -> IngestAck:
        """Store a batch from ``source`` (the caller's verified SPIFFE ID).

        Two wire forms: NDJSON (a header line ``{"chain": ID, ...}`` then one record per line,
        what :class:`~meshward.audit.shipper.AuditShipper` sends) or one JSON object
        ``{"chain": ID, "records": [record, ...]}`` (for JSON-only clients).
        """
        header_end = batch.find(b"\n")
        first = batch if header_end < 0 else batch[:header_end]
        try:
            header = json.loads(first)
            chain = header["chain"]
        except (ValueError, KeyError, TypeError):
            raise AuditRejected(400, "audit batch: malformed header line") from None
        if not isinstance(chain, str) or not re.fullmatch(r"[0-9a-f]{8,64}", chain):
            raise AuditRejected(400, "audit batch: invalid chain id")
        if isinstance(header.get("records"), list):
            try:
                lines = [json.dumps(r).encode() for r in header["records"]]
            except (TypeError, ValueError):
                raise AuditRejected(400, "audit batch: records are not JSON") from None
        elif header_end < 0:
            raise AuditRejected(400, "audit batch: no records")
        else:
            lines = batch[header_end + 1 :].splitlines(keepends=True)
        return self.ingest_records(source, chain, lines)

    def _writable(self) -> CheckpointSigner:
        if self._signer is None:
            raise AuditRejected(
                503, f"audit store {self.directory} is held by another process (read-only here)"
            )
        return self._signer

    def close(self) -> None:
        """Release the writer lock (the store stays readable)."""
        self._release()

    def ingest_records(self, source: str, chain: str, lines: list[bytes]) -> IngestAck:
        if len(lines) > _MAX_BATCH_RECORDS:
            raise AuditRejected(413, f"audit batch: more than {_MAX_BATCH_RECORDS} records")
        self._writable()
        records: list[AuditRecord] = []
        for i, line in enumerate(lines):
            try:
                record = parse_record_line(line)
                check_event(record.event, source, len(line))
            except (RecordError, EventInvalid) as exc:
                raise AuditRejected(400, f"audit batch record {i + 1}: {exc}") from None
            records.append(record)
        with self._lock:
            info = self._by_source_chain.get((source, chain))
            seq, head = (info.seq, info.head) if info else (0, GENESIS)
            fresh: list[AuditRecord] = []
            for record in records:
                if record.seq <= seq and not fresh:
                    continue  # already stored (a resend after a lost ack)
                if record.seq != seq + 1:
                    raise AuditRejected(
                        409, f"audit batch: got seq {record.seq}, expected {seq + 1}", expected_seq=seq + 1
                    )
                if record.prev != head:
                    raise AuditRejected(
                        409,
                        f"audit batch: seq {record.seq} does not link to the stored head",
                        expected_seq=seq + 1,
                    )
                fresh.append(record)
                seq, head = record.seq, record.hash
            if fresh:
                if info is None:
                    info = self._new_chain(source, chain)
                self._append(info, fresh)
                self._maybe_checkpoint()
            return IngestAck(chain, seq, len(fresh))

    def record(self, event: dict[str, Any]) -> AuditRecord:
        """Append one of the control plane's own events to its chain."""
        self._writable()
        with self._lock:
            if self._control is None:
                existing = [c for c in self._chains.values() if c.source == CONTROL_SOURCE]
                info = existing[0] if existing else self._new_chain(CONTROL_SOURCE, secrets.token_hex(8))
                self._control_chain = info
                self._control = ChainWriter(info.seq, info.head)
            assert self._control_chain is not None
            record = self._control.next(event)
            self._append(self._control_chain, [record])
            self._maybe_checkpoint()
            return record

    def checkpoint(self, force: bool = False) -> bool:
        """Sign the current heads if anything changed since the last checkpoint."""
        if self.read_only:
            return False
        with self._lock:
            current = {slug: c.seq for slug, c in self._chains.items()}
            if not force and current == self._checkpointed:
                return False
            # Only the chains that moved: earlier checkpoints (linked by ``prev``) cover the rest.
            chains = {
                slug: {"source": c.source, "chain": c.chain, "seq": c.seq, "hash": c.head}
                for slug, c in sorted(self._chains.items())
                if force or self._checkpointed.get(slug) != c.seq
            }
            self._checkpoint_n += 1
            line = self._writable().sign(
                self._checkpoint_n, _now_iso(), self._checkpoint_prev, sum(current.values()), chains
            )
            fd = os.open(self.checkpoints_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._checkpoint_prev = checkpoint_digest(line)
            self._checkpointed = current
            self._last_checkpoint_at = time.monotonic()
            return True

    def read(self, slug: str, after_seq: int, limit: int = 1000) -> list[AuditRecord]:
        """Stored records of chain ``slug`` after ``after_seq`` (for sinks and ``audit tail``).

        Sequential readers (one per sink) resume from a remembered byte offset.
        """
        path = self.trail_dir / f"{slug}.jsonl"
        cached = self._read_offsets.get((slug, after_seq))
        out: list[AuditRecord] = []
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return out
        with fh:
            offset = cached if cached is not None else 0
            fh.seek(offset)
            for line in fh:
                if not line.endswith(b"\n"):
                    break
                offset += len(line)
                try:
                    record = parse_record_line(line, check_hash=False)
                except RecordError:
                    continue
                if record.seq > after_seq:
                    out.append(record)
                    if len(out) >= limit:
                        break
        if out:
            with self._lock:
                if len(self._read_offsets) > 256:
                    self._read_offsets.clear()
                self._read_offsets[(slug, out[-1].seq)] = offset
        return out

    # -- internals -------------------------------------------------------------------------------
    def _append(self, info: ChainInfo, records: list[AuditRecord]) -> None:
        data = b"".join(r.line() for r in records)
        fd = os.open(self.trail_dir / info.path_name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        info.seq, info.head = records[-1].seq, records[-1].hash

    def _maybe_checkpoint(self) -> None:
        if time.monotonic() - self._last_checkpoint_at >= self.checkpoint_interval:
            self.checkpoint()
