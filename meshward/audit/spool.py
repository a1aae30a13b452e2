"""The sidecar's crash-safe audit spool: an append-only, chained, segmented file on disk.

Layout of a spool directory (``<sidecar state>/audit``)::

    chain            this spool's chain id (random, made once; a wiped spool starts a new chain)
    acked            the last sequence number the control plane acknowledged (atomic rename)
    base             "<seq> <hash>": the chain head before the newest segment (written at rotation)
    seg-<seq>.jsonl  records from <seq> on, one JSON line each (see :mod:`meshward.audit.chain`)

Each record is written with a single ``os.write`` on an ``O_APPEND`` descriptor before the
sidecar moves on, so a SIGKILL loses at most the record being written and never leaves a
half record that counts: on open, the tail of the last segment is checked line by line and
cut at the first torn or unhashable line. Segments whose records are all acknowledged are
deleted. ``sync`` (fsync) is left to the shipper, which calls it off the event loop.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshward.audit.chain import GENESIS, AuditRecord, ChainWriter, RecordError, parse_record_line
from meshward.identity.keys import write_private

__all__ = ["AuditSpool", "SpoolBatch"]

_SEGMENT_PREFIX = "seg-"
_SEGMENT_SUFFIX = ".jsonl"


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    """Raw record lines ``first_seq..last_seq`` read for shipping."""

    chain: str
    first_seq: int
    last_seq: int
    lines: list[bytes]

    def body(self) -> bytes:
        """The wire form: a header line then the record lines, as NDJSON."""
        header = b'{"chain":"%s","first_seq":%d,"count":%d}\n' % (
            self.chain.encode(),
            self.first_seq,
            len(self.lines),
        )
        return header + b"".join(self.lines)


def _segment_name(first_seq: int) -> str:
    return f"{_SEGMENT_PREFIX}{first_seq:020d}{_SEGMENT_SUFFIX}"


def _segment_first_seq(path: Path) -> int:
    return int(path.name[len(_SEGMENT_PREFIX) : -len(_SEGMENT_SUFFIX)])


class AuditSpool:
    """Append records (sync, cheap), read them back for shipping, forget what was acknowledged."""

    def __init__(self, directory: Path, segment_bytes: int = 4 << 20) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.chain = self._load_chain_id()
        self.acked = self._load_acked()
        self.recovered_bytes = 0  # bytes of torn tail cut on open (for the log / tests)
        self._writer = ChainWriter()
        # Appends come from the sidecar's loop (requests) and from the thread compiling a new
        # generation (its "config applied" event): one at a time, or the chain would fork.
        self._append_lock = threading.Lock()
        self._fd = -1
        self._segment_first = 1
        self._segment_size = 0
        self._read_pos: tuple[int, int, int] | None = None  # (segment first seq, offset, next seq)
        self._recover()

    # -- state -----------------------------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        return self._writer.seq

    @property
    def head(self) -> str:
        return self._writer.head

    @property
    def pending(self) -> int:
        return self._writer.seq - self.acked

    def _load_chain_id(self) -> str:
        path = self.directory / "chain"
        try:
            chain = path.read_text().strip()
            if chain:
                return chain
        except FileNotFoundError:
            pass
        chain = secrets.token_hex(8)
        write_private(path, chain.encode())
        return chain

    def _load_acked(self) -> int:
        try:
            return int((self.directory / "acked").read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def segments(self) -> list[Path]:
        found = [
            p
            for p in self.directory.iterdir()
            if p.name.startswith(_SEGMENT_PREFIX) and p.name.endswith(_SEGMENT_SUFFIX)
        ]
        return sorted(found, key=_segment_first_seq)

    # -- recovery --------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Find the last good record; cut whatever follows it (a torn write)."""
        segments = self.segments()
        seq, head = self._load_base()
        for index in range(len(segments) - 1, -1, -1):
            found = self._recover_segment(segments[index], truncate=index == len(segments) - 1)
            if found is not None:
                seq, head = found
                break
        self._writer = ChainWriter(seq, head)
        if segments:
            self._open_segment(segments[-1], _segment_first_seq(segments[-1]))
        else:
            self._open_segment(self.directory / _segment_name(seq + 1), seq + 1)

    def _load_base(self) -> tuple[int, str]:
        """``base``: the chain head just before the oldest kept segment (written at rotation)."""
        try:
            seq_text, head = (self.directory / "base").read_text().split()
            return int(seq_text), head
        except (FileNotFoundError, ValueError):
            return 0, GENESIS

    def _recover_segment(self, path: Path, truncate: bool) -> tuple[int, str] | None:
        data = path.read_bytes()
        good_end, last_record = 0, None
        offset = 0
        while offset < len(data):
            nl = data.find(b"\n", offset)
            if nl < 0:
                break  # no newline: torn
            try:
                record = parse_record_line(data[offset:nl])
            except RecordError:
                break
            if last_record is not None and (
                record.seq != last_record.seq + 1 or record.prev != last_record.hash
            ):
                break
            last_record = record
            offset = nl + 1
            good_end = offset
        if truncate and good_end < len(data):
            self.recovered_bytes += len(data) - good_end
            with open(path, "r+b") as fh:
                fh.truncate(good_end)
                fh.flush()
                os.fsync(fh.fileno())
        return None if last_record is None else (last_record.seq, last_record.hash)

    def _open_segment(self, path: Path, first_seq: int) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._segment_first = first_seq
        self._segment_size = os.fstat(self._fd).st_size

    # -- writing ---------------------------------------------------------------------------------
    def append(self, event: dict[str, Any]) -> AuditRecord:
        """Chain ``event`` and write it to disk (one ``write``); returns the record. Thread-safe."""
        with self._append_lock:
            if self._segment_size >= self.segment_bytes:
                write_private(self.directory / "base", f"{self._writer.seq} {self._writer.head}".encode())
                seq = self._writer.seq + 1
                self._open_segment(self.directory / _segment_name(seq), seq)
            record, line = self._writer.next_with_line(event)
            os.write(self._fd, line)
            self._segment_size += len(line)
        return record

    def sync(self) -> None:
        """fsync the active segment (call from a thread: it can take milliseconds)."""
        if self._fd >= 0:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    # -- reading and acknowledging ---------------------------------------------------------------
    def read(self, after_seq: int, max_records: int = 500, max_bytes: int = 1 << 20) -> SpoolBatch | None:
        """Record lines after ``after_seq`` (at most the limits), or None when there are none."""
        last = self._writer.seq
        if after_seq >= last:
            return None
        lines: list[bytes] = []
        size = 0
        first_read = 0
        want = after_seq + 1
        pos = self._read_pos if self._read_pos and self._read_pos[2] == want else None
        segments = self.segments()
        start_index = 0
        for i, seg in enumerate(segments):
            if _segment_first_seq(seg) <= want:
                start_index = i
        for seg in segments[start_index:]:
            first = _segment_first_seq(seg)
            offset, seq = (pos[1], pos[2]) if pos and pos[0] == first else (0, first)
            with open(seg, "rb") as fh:
                fh.seek(offset)
                for raw in fh:
                    if not raw.endswith(b"\n") or seq > last:
                        break
                    offset += len(raw)
                    if seq >= want:
                        if not lines:
                            first_read = seq
                        lines.append(raw)
                        size += len(raw)
                    seq += 1
                    if len(lines) >= max_records or size >= max_bytes:
                        break
            self._read_pos = (first, offset, seq)
            if len(lines) >= max_records or size >= max_bytes or seq > last:
                break
        if not lines:
            return None
        # ``first_read`` > ``want`` only when the records asked for were acknowledged and deleted.
        return SpoolBatch(self.chain, first_read, first_read + len(lines) - 1, lines)

    @property
    def first_available(self) -> int:
        """The oldest sequence number still on disk (``last_seq + 1`` when none is)."""
        segments = self.segments()
        return _segment_first_seq(segments[0]) if segments else self._writer.seq + 1

    def ack(self, seq: int) -> None:
        """The control plane stored everything up to ``seq``: persist that, drop spent segments.

        May run in a worker thread while the loop appends: it never touches the newest segment.
        """
        seq = min(seq, self._writer.seq)
        if seq <= self.acked:
            return
        self.acked = seq
        write_private(self.directory / "acked", str(seq).encode())
        segments = self.segments()
        for current, following in itertools.pairwise(segments):
            if _segment_first_seq(following) - 1 <= seq:
                current.unlink(missing_ok=True)
