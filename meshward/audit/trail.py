"""Reading trail files: records in file order, and the last complete line (pure file reads)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from meshward.audit.chain import AuditRecord, RecordError, parse_record_line

__all__ = ["iter_trail", "last_line"]


def last_line(path: Path) -> tuple[bytes | None, int]:
    """The last complete line of ``path`` and the size up to its end (a torn tail is beyond)."""
    size = path.stat().st_size
    if size == 0:
        return None, 0
    with open(path, "rb") as fh:
        chunk = 1 << 16
        while True:
            start = max(0, size - chunk)
            fh.seek(start)
            data = fh.read(size - start)
            end = data.rfind(b"\n")
            if end < 0 and start > 0:
                chunk *= 4
                continue
            if end < 0:
                return None, 0
            begin = data.rfind(b"\n", 0, end) + 1
            if begin == 0 and start > 0:
                chunk *= 4
                continue
            return data[begin : end + 1], start + end + 1


def iter_trail(path: Path) -> Iterator[AuditRecord]:
    """Records of one trail file in file order (hashes not checked: see ``verify``)."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, generator
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            if line.endswith(b"\n"):
                try:
                    yield parse_record_line(line, check_hash=False)
                except RecordError:
                    continue
