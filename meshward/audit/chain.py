"""The hash chain every audit trail is made of (pure: no I/O).

A record is one JSON line ``{"seq": N, "prev": H(N-1), "hash": H(N), "event": {...}}``:
``seq`` counts from 1 in each chain, ``prev`` of the first record is :data:`GENESIS`, and
``hash`` is SHA-256 over ``b"<seq>\\n<prev>\\n<event>"`` where ``<event>`` is the event's
compact JSON exactly as it appears in the line (keys in written order, ASCII-escaped).
Editing, removing, reordering or inserting a record breaks either its own hash, the next
record's ``prev`` or the sequence numbers — :mod:`meshward.audit.verify` names which.

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
    "compact_json",
    "parse_record_line",
    "record_hash",
]

GENESIS = "0" * 64


def _not_json(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# Compact, keys in the order written, ASCII only (non-ASCII and lone surrogates escaped, so any
# string a request can carry encodes). ``json.loads`` keeps key order, so re-encoding a parsed
# record gives back exactly these bytes: the hash is over the event as it appears in the line.
# The C encoder is made once (``JSONEncoder.encode`` builds one per call: a third of the cost).
_c_encoder = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _not_json, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
    )
    if getattr(json.encoder, "c_make_encoder", None) is not None
    else None
)
_slow_dumps = json.JSONEncoder(separators=(",", ":")).encode


def compact_json(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"))``, faster (the hot path of audit and access log)."""
    if _c_encoder is None:
        return _slow_dumps(value)
    return "".join(_c_encoder(value, 0))


_line_dumps = compact_json


class RecordError(ValueError):
    """A line is not a well-formed audit record (torn, edited or not ours)."""


def canonical_json(value: Any) -> bytes:
    """The byte form hashes are computed over: compact JSON, keys in their order, ASCII."""
    return compact_json(value).encode()


def record_hash(seq: int, prev: str, event: dict[str, Any]) -> str:
    return _hash_canonical(seq, prev, canonical_json(event))


def _hash_canonical(seq: int, prev: str, canonical_event: bytes) -> str:
    return hashlib.sha256(b"%d\n%s\n%s" % (seq, prev.encode(), canonical_event)).hexdigest()


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
        return self.next_with_line(event)[0]

    def next_with_line(self, event: dict[str, Any]) -> tuple[AuditRecord, bytes]:
        """The record and its line, serializing the event once (the hot path of the spool)."""
        seq, prev = self.seq + 1, self.head
        canonical = canonical_json(event)
        digest = _hash_canonical(seq, prev, canonical)
        line = b'{"seq":%d,"prev":"%s","hash":"%s","event":%s}\n' % (
            seq,
            prev.encode(),
            digest.encode(),
            canonical,
        )
        self.seq, self.head = seq, digest
        return AuditRecord(seq, prev, digest, event), line
