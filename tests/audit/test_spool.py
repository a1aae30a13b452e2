"""The sidecar spool: chained appends, torn tails cut on reopen, SIGKILL mid-write, acks and segments."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from meshward.audit.chain import GENESIS, parse_record_line
from meshward.audit.spool import AuditSpool
from tests.support.proc import PYTHON, ROOT, wait_for


def _records(spool_dir: Path) -> list[bytes]:
    lines: list[bytes] = []
    for seg in sorted(spool_dir.glob("seg-*.jsonl")):
        lines += seg.read_bytes().splitlines(keepends=True)
    return lines


def test_append_chains_and_survives_reopen(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path)
    first = spool.append({"n": 1})
    second = spool.append({"n": 2})
    assert (first.seq, first.prev) == (1, GENESIS)
    assert (second.seq, second.prev) == (2, first.hash)
    spool.close()
    again = AuditSpool(tmp_path)
    assert (again.last_seq, again.head, again.chain) == (2, second.hash, spool.chain)
    assert again.append({"n": 3}).prev == second.hash


@pytest.mark.parametrize("cut", [1, 10, -2, -1])
def test_torn_tail_is_cut_on_reopen(tmp_path: Path, cut: int) -> None:
    spool = AuditSpool(tmp_path)
    for i in range(3):
        spool.append({"n": i, "pad": "x" * 50})
    spool.close()
    (seg,) = tmp_path.glob("seg-*.jsonl")
    data = seg.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    torn = data[: last_start + cut] if cut > 0 else data[: len(data) + cut]
    seg.write_bytes(torn)
    reopened = AuditSpool(tmp_path)
    assert reopened.last_seq == 2
    assert reopened.recovered_bytes == len(torn) - last_start
    assert seg.read_bytes() == data[:last_start]
    assert reopened.append({"n": "after"}).seq == 3


def test_read_ack_and_segment_rotation(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path, segment_bytes=400)
    for i in range(20):
        spool.append({"n": i})
    assert len(list(tmp_path.glob("seg-*.jsonl"))) > 2
    batch = spool.read(0, max_records=7)
    assert batch is not None and (batch.first_seq, batch.last_seq) == (1, 7)
    nxt = spool.read(7, max_records=100)
    assert nxt is not None and (nxt.first_seq, nxt.last_seq) == (8, 20)
    assert [parse_record_line(line).seq for line in nxt.lines] == list(range(8, 21))
    spool.ack(15)
    remaining = sorted(tmp_path.glob("seg-*.jsonl"))
    assert int(remaining[0].name[4:-6]) <= 16  # the segment holding seq 16 is kept
    spool.close()
    reopened = AuditSpool(tmp_path, segment_bytes=400)
    assert (reopened.acked, reopened.last_seq, reopened.pending) == (15, 20, 5)
    again = reopened.read(15)
    assert again is not None and again.first_seq == 16


def test_fully_acked_rotation_keeps_the_chain(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path, segment_bytes=1)  # one record per segment
    records = [spool.append({"n": i}) for i in range(10)]
    spool.ack(10)
    assert len(list(tmp_path.glob("seg-*.jsonl"))) == 1  # acknowledged segments are deleted
    spool.close()
    # The only remaining record is torn: the chain head before it comes from ``base``.
    (newest,) = tmp_path.glob("seg-*.jsonl")
    newest.write_bytes(newest.read_bytes()[:5])
    reopened = AuditSpool(tmp_path, segment_bytes=1)
    assert (reopened.last_seq, reopened.head, reopened.chain) == (9, records[8].hash, spool.chain)
    assert reopened.append({"n": "next"}).prev == records[8].hash


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from meshward.audit.spool import AuditSpool

    spool = AuditSpool(Path(sys.argv[1]))
    pad = "p" * 4000  # big records: a kill lands mid-write more often
    i = 0
    while True:
        spool.append({"n": i, "pad": pad})
        i += 1
        if i == 50:
            Path(sys.argv[2]).write_text("started")
    """
)


@pytest.mark.e2e
def test_sigkilled_writer_leaves_no_half_record(tmp_path: Path) -> None:
    """kill -9 a real process appending as fast as it can; reopen: every record whole and chained."""
    spool_dir, started = tmp_path / "spool", tmp_path / "started"
    for _round in range(3):  # each round resumes the chain the previous kill left
        started.unlink(missing_ok=True)
        proc = subprocess.Popen([PYTHON, "-c", _WRITER, str(spool_dir), str(started)], cwd=ROOT)
        try:
            wait_for(started.exists, timeout=20, what="writer to start")
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(10)
        spool = AuditSpool(spool_dir)
        lines = _records(spool_dir)
        assert lines and all(line.endswith(b"\n") for line in lines)
        records = [parse_record_line(line) for line in lines]  # raises on any half record
        assert [r.seq for r in records] == list(range(1, len(records) + 1))
        assert all(r.prev == p.hash for p, r in itertools.pairwise(records))
        assert spool.last_seq == len(records) and spool.head == records[-1].hash
        spool.close()
