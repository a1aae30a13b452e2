"""The hash chain every audit trail is made of (pure: no I/O).

A record is one JSON line ``{"seq": N, "prev": H(N-1), "hash": H(N), "event": {...}}``:
``seq`` counts from 1 in each chain, ``prev`` of the first record is :data:`GENESIS`, and
``hash`` is SHA-256 over the sequence number, the previous hash and the canonical JSON of the
event. Editing, removing, reordering or inserting a record breaks either its own hash, the
next record's ``prev`` or the sequence numbers — :mod:`meshward.audit.verify` names which.

A record line is written in one ``write`` and is only complete with its trailing newline, so
a reader that sees a line without one, or one that fails to parse or hash, has found a torn
tail (the writer died mid-write), never a record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GENESIS",
    "AuditRecord",
    "ChainWriter",
    "RecordError",
    "canonical_json",
    "parse_record_line",
    "record_hash",
]

GENESIS = "0" * 64

_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_line_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class RecordError(ValueError):
    """A line is not a well-formed audit record (torn, edited or not ours)."""


def canonical_json(value: Any) -> bytes:
    """The one byte form of a JSON value that hashes are computed over (sorted keys, compact)."""
    return _dumps(value).encode()


def record_hash(seq: int, prev: str, event: dict[str, Any]) -> str:
    h = hashlib.sha256(b"%d\n" % seq)
    h.update(prev.encode())
    h.update(b"\n")
    h.update(canonical_json(event))
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One link of a chain."""

    seq: int
    prev: str
    hash: str
    event: dict[str, Any]

    def line(self) -> bytes:
        """The record as one newline-terminated JSON line (the spool and store format)."""
        body = _line_dumps({"seq": self.seq, "prev": self.prev, "hash": self.hash, "event": self.event})
        return body.encode() + b"\n"

    def hash_ok(self) -> bool:
        return record_hash(self.seq, self.prev, self.event) == self.hash


def parse_record_line(line: bytes | str, check_hash: bool = True) -> AuditRecord:
    """Parse one line (with or without its newline); raise :class:`RecordError` if it is not a record."""
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RecordError("not a JSON object")
    seq, prev, digest, event = data.get("seq"), data.get("prev"), data.get("hash"), data.get("event")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise RecordError("seq missing or not a positive integer")
    if not isinstance(prev, str) or not isinstance(digest, str) or not isinstance(event, dict):
        raise RecordError("prev, hash or event missing")
    record = AuditRecord(seq, prev, digest, event)
    if check_hash and not record.hash_ok():
        raise RecordError(f"seq {seq}: hash does not match content")
    return record


class ChainWriter:
    """Extends a chain in memory: ``next(event)`` gives the record to persist."""

    __slots__ = ("head", "seq")

    def __init__(self, seq: int = 0, head: str = GENESIS) -> None:
        self.seq = seq  # the last sequence number used
        self.head = head  # the hash of the last record

    def next(self, event: dict[str, Any]) -> AuditRecord:
        seq = self.seq + 1
        digest = record_hash(seq, self.head, event)
        record = AuditRecord(seq, self.head, digest, event)
        self.seq, self.head = seq, digest
        return record
