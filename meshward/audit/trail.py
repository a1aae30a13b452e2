"""Trail files: records in file order, the last complete line, and the index of chains.

The index says which source (verified SPIFFE ID) and chain each trail file belongs to. It is
append-only: ``trail/chains.index`` gets one JSON line per new chain (written in one ``write``
and fsynced), so a new chain never rewrites what is there. ``trail/chains.json`` (one object,
rewritten whole) is what older stores wrote; it is still read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from meshward.audit.chain import AuditRecord, RecordError, parse_record_line

__all__ = ["INDEX_NAME", "append_index", "iter_trail", "last_line", "read_index"]

INDEX_NAME = "chains.index"
_LEGACY_INDEX = "chains.json"


def read_index(trail_dir: Path) -> dict[str, dict[str, Any]]:
    """slug -> {"source", "chain", "created"} from the legacy object and the append-only lines."""
    index: dict[str, dict[str, Any]] = {}
    try:
        legacy = json.loads((trail_dir / _LEGACY_INDEX).read_text())
        if isinstance(legacy, dict):
            index.update({str(k): v for k, v in legacy.items() if isinstance(v, dict)})
    except (FileNotFoundError, ValueError):
        pass
    try:
        fh = open(trail_dir / INDEX_NAME, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return index
    with fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break  # torn by a crash mid-append: that chain stored nothing yet
            try:
                entry = json.loads(line)
                index.setdefault(str(entry["slug"]), entry)
            except (ValueError, KeyError, TypeError):
                continue
    return index


def append_index(trail_dir: Path, slug: str, source: str, chain: str, created: str) -> None:
    """Register one new chain: one appended, fsynced line."""
    line = json.dumps({"slug": slug, "source": source, "chain": chain, "created": created}) + "\n"
    fd = os.open(trail_dir / INDEX_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


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
