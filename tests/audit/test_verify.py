"""``audit verify`` passes on a clean trail and names the record after each kind of tampering."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshward.audit.chain import AuditRecord, ChainWriter, parse_record_line
from meshward.audit.spool import AuditSpool
from meshward.audit.store import AuditRejected, AuditStore
from meshward.audit.verify import verify_audit_dir
from meshward.cli.main import main
from tests.support.proc import PYTHON, ROOT, spawn, wait_for

SOURCE = "spiffe://demo.local/ns/ml/sa/fraud-model"


def _event(i: int) -> dict[str, object]:
    return {"class_uid": 4002, "time": 1_700_000_000_000 + i, "http_response": {"code": 200}, "n": i}


def _fill(state: Path, records: int = 12, batch: int = 4) -> Path:
    """A store with one sidecar chain of ``records`` records ingested in batches (one checkpoint each)."""
    spool = AuditSpool(state / "sidecar-spool")
    store = AuditStore(state)
    for i in range(1, records + 1):
        spool.append(_event(i))
        if i % batch == 0:
            b = spool.read(spool.acked, max_records=batch)
            assert b is not None
            ack = store.ingest(SOURCE, b.body())
            spool.ack(ack.acked_seq)
    spool.close()
    (trail,) = (state / "audit" / "trail").glob("*.jsonl")
    return trail


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _edit_plain(path: Path) -> None:
    lines = _lines(path)
    data = json.loads(lines[4])
    data["event"]["http_response"]["code"] = 403
    lines[4] = json.dumps(data) + "\n"
    path.write_text("".join(lines))


def _edit_rehash(path: Path) -> None:
    lines = _lines(path)
    rec = parse_record_line(lines[4])
    event = dict(rec.event, n=999)
    forged = ChainWriter(rec.seq - 1, rec.prev).next(event)
    lines[4] = forged.line().decode()
    path.write_text("".join(lines))


def _rewrite_all(path: Path) -> None:
    """Edit seq 5 and recompute every hash after it: only the signed checkpoints can tell."""
    records = [parse_record_line(line) for line in _lines(path)]
    writer = ChainWriter(records[3].seq, records[3].hash)
    out = [r.line().decode() for r in records[:4]]
    for r in records[4:]:
        event = dict(r.event, n=-1) if r.seq == 5 else r.event
        out.append(writer.next(event).line().decode())
    path.write_text("".join(out))


def _remove(path: Path) -> None:
    lines = _lines(path)
    del lines[4]
    path.write_text("".join(lines))


def _remove_tail(path: Path) -> None:
    path.write_text("".join(_lines(path)[:-3]))


def _reorder(path: Path) -> None:
    lines = _lines(path)
    lines[4], lines[5] = lines[5], lines[4]
    path.write_text("".join(lines))


def _insert(path: Path) -> None:
    lines = _lines(path)
    before = parse_record_line(lines[3])
    fake = ChainWriter(before.seq, before.hash).next(_event(77))  # claims seq 5
    lines.insert(4, fake.line().decode())
    path.write_text("".join(lines))


def _append(path: Path) -> None:
    last = parse_record_line(_lines(path)[-1])
    fake: AuditRecord = ChainWriter(last.seq, last.hash).next(_event(99))
    with open(path, "a") as fh:
        fh.write(fake.line().decode())


TAMPERING: list[tuple[str, Callable[[Path], None], str, int]] = [
    ("edit", _edit_plain, "edited", 5),
    ("edit and recompute its hash", _edit_rehash, "edited", 5),
    ("edit and re-hash the rest of the chain", _rewrite_all, "rewritten", 8),
    ("remove", _remove, "removed", 5),
    ("remove the newest records", _remove_tail, "removed", 10),
    ("reorder", _reorder, "reordered", 5),
    ("insert", _insert, "inserted", 5),
    ("append behind the store's back", _append, "inserted", 13),
]


def test_clean_trail_verifies(tmp_path: Path) -> None:
    _fill(tmp_path)
    report = verify_audit_dir(tmp_path / "audit")
    assert report.ok, report.problems
    assert (report.records, report.chains, report.checkpoints) == (12, 1, 3)


@pytest.mark.parametrize(("what", "tamper", "kind", "seq"), TAMPERING, ids=[t[0] for t in TAMPERING])
def test_tampering_is_named(
    tmp_path: Path, what: str, tamper: Callable[[Path], None], kind: str, seq: int
) -> None:
    trail = _fill(tmp_path)
    tamper(trail)
    report = verify_audit_dir(tmp_path / "audit")
    assert not report.ok
    assert (kind, seq) in {(p.kind, p.seq) for p in report.problems}, [str(p) for p in report.problems]


def test_checkpoint_forgery_is_detected(tmp_path: Path) -> None:
    _fill(tmp_path)
    path = tmp_path / "audit" / "checkpoints.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    data = json.loads(lines[1])
    data["count"] = 1
    lines[1] = json.dumps(data) + "\n"
    path.write_text("".join(lines))
    report = verify_audit_dir(tmp_path / "audit")
    assert [p.kind for p in report.problems] == ["checkpoint"]
    assert "signature does not verify" in report.problems[0].message


def test_cli_verify_exit_code_and_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trail = _fill(tmp_path)
    assert main(["audit", "verify", "--state", str(tmp_path)]) == 0
    assert "OK: 12 records in 1 chains" in capsys.readouterr().out
    _remove(trail)
    assert main(["audit", "verify", "--state", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "record seq 5" in out and "removed" in out
    # The real command, as an auditor runs it: one line per problem, non-zero exit.
    proc = subprocess.run(
        [PYTHON, "-m", "meshward", "audit", "verify", "--state", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is False and report["problems"][0]["seq"] == 5


def test_cli_export_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(tmp_path, records=4)
    assert main(["audit", "export", "--state", str(tmp_path), "--format", "ocsf"]) == 0
    ocsf = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["unmapped"]["meshward_audit"]["seq"] for e in ocsf] == [1, 2, 3, 4]
    assert all(e["unmapped"]["meshward_audit"]["source"] == SOURCE for e in ocsf)
    assert main(["audit", "export", "--state", str(tmp_path), "--format", "cef"]) == 0
    cef = capsys.readouterr().out.splitlines()
    assert len(cef) == 4 and all(line.startswith("CEF:0|Meshward|meshward|") for line in cef)
    assert "cn1=1" in cef[0]
    assert main(["audit", "export", "--state", str(tmp_path), "--format", "syslog"]) == 0
    syslog = capsys.readouterr().out.splitlines()
    assert syslog[0].startswith("<110>1 2023-11-14T22:13:20.001Z ")
    assert 'seq="1"' in syslog[0]
    assert main(["audit", "tail", "--state", str(tmp_path), "-n", "2"]) == 0
    tail = capsys.readouterr().out.splitlines()
    assert len(tail) == 2 and f"{SOURCE} #4 HTTP Activity/Other" in tail[1]


def test_store_refuses_gaps_and_broken_links(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "spool")
    store = AuditStore(tmp_path)
    for i in range(6):
        spool.append(_event(i))
    batch = spool.read(2, max_records=2)  # seq 3..4, but the store has nothing yet
    assert batch is not None
    with pytest.raises(AuditRejected) as refused:
        store.ingest(SOURCE, batch.body())
    assert refused.value.status == 409 and refused.value.expected_seq == 1
    first = spool.read(0, max_records=4)
    assert first is not None
    assert store.ingest(SOURCE, first.body()).acked_seq == 4
    # A resend (lost ack) is harmless; a forged continuation that does not link is refused.
    assert store.ingest(SOURCE, first.body()).stored == 0
    forged = ChainWriter(4, "f" * 64).next(_event(5))
    with pytest.raises(AuditRejected, match="does not link"):
        store.ingest_records(SOURCE, spool.chain, [forged.line()])
    # The same chain id under another identity is a different trail: the body cannot claim a source.
    assert store.ingest("spiffe://demo.local/ns/web/sa/webapp", first.body()).acked_seq == 4
    assert len(store.chains()) == 2


@pytest.mark.e2e
def test_tail_follows_new_records(tmp_path: Path) -> None:
    _fill(tmp_path, records=4)
    proc = spawn(
        [PYTHON, "-m", "meshward", "audit", "tail", "-f", "-n", "1", "--state", str(tmp_path)],
        tmp_path / "tail.log",
    )
    try:
        wait_for(lambda: "#4 " in proc.output(), timeout=30, what="the last existing record")
        store = AuditStore(tmp_path)
        store.record(
            {
                "class_uid": 6002,
                "class_name": "Application Lifecycle",
                "activity_name": "Start",
                "time": 1_700_000_100_000,
                "app": {"name": "meshward-control"},
            }
        )
        wait_for(
            lambda: "Application Lifecycle/Start meshward-control" in proc.output(),
            timeout=15,
            what="followed record",
        )
        assert "#3 " not in proc.output()  # -n 1: only the newest existing record first
    finally:
        proc.stop()


def test_a_trail_re_signed_with_another_key_fails_against_the_pinned_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trail = _fill(tmp_path)
    audit = tmp_path / "audit"
    pinned = tmp_path / "auditor-copy.pub"
    pinned.write_bytes((audit / "checkpoint.pub").read_bytes())
    # Someone with write access rewrites the chain, throws the checkpoints and key away and
    # lets a fresh store sign the forgery with a key of its own.
    _rewrite_all(trail)
    for name in ("checkpoints.jsonl", "checkpoint.key", "checkpoint.pub"):
        (audit / name).unlink()
    AuditStore(tmp_path)
    assert verify_audit_dir(audit).ok  # self-consistent with its own (new) key...
    report = verify_audit_dir(audit, pinned)  # ...but not with the key the auditor kept
    assert not report.ok and {p.kind for p in report.problems} == {"checkpoint"}
    assert main(["audit", "verify", "--state", str(tmp_path), "--key", str(pinned)]) == 1
    assert "signature does not verify" in capsys.readouterr().out


def test_one_writer_per_store_others_read_only(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "spool")
    spool.append(_event(1))
    batch = spool.read(0)
    assert batch is not None
    writer = AuditStore(tmp_path)
    writer.ingest(SOURCE, batch.body())
    reader = AuditStore(tmp_path)  # e.g. a CLI or test while the control plane runs
    assert reader.read_only and [c.seq for c in reader.chains()] == [1]
    with pytest.raises(AuditRejected) as refused:
        reader.ingest(SOURCE, batch.body())
    assert refused.value.status == 503
    assert not reader.checkpoint(force=True)
    writer.close()
    assert not AuditStore(tmp_path).read_only
    assert verify_audit_dir(tmp_path / "audit").ok


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("pristine")
    _fill(state, records=12, batch=3)
    return state


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    op=st.sampled_from(["flip", "delete", "swap", "duplicate", "truncate"]),
    index=st.integers(0, 11),
    other=st.integers(0, 11),
)
def test_any_single_tampering_is_detected(pristine: Path, op: str, index: int, other: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "s"
        shutil.copytree(pristine, state)
        (trail,) = (state / "audit" / "trail").glob("*.jsonl")
        lines = _lines(trail)
        if op == "flip":  # change one character inside the event
            line = lines[index]
            at = line.index('"event":') + 9 + other % 5
            lines[index] = line[:at] + ("0" if line[at] != "0" else "1") + line[at + 1 :]
        elif op == "delete":
            del lines[index]
        elif op == "swap":
            if index == other:
                other = (other + 1) % len(lines)
            lines[index], lines[other] = lines[other], lines[index]
        elif op == "duplicate":
            lines.insert(other, lines[index])
        else:
            lines = lines[:index]
        trail.write_text("".join(lines))
        report = verify_audit_dir(state / "audit")
        assert not report.ok, (op, index, other)


def test_store_recovers_from_torn_writes(tmp_path: Path) -> None:
    """A control plane killed mid-append: the torn trail line and checkpoint line are cut on restart."""
    trail = _fill(tmp_path, records=8, batch=4)
    checkpoints = tmp_path / "audit" / "checkpoints.jsonl"
    with open(trail, "ab") as fh:
        fh.write(b'{"seq":9,"prev":"')
    with open(checkpoints, "ab") as fh:
        fh.write(b'{"n":3,"chains"')
    store = AuditStore(tmp_path)
    assert [c.seq for c in store.chains()] == [8]
    store.close()
    report = verify_audit_dir(tmp_path / "audit")
    assert report.ok, [str(p) for p in report.problems]
    assert report.checkpoints == 2


def test_restart_signs_a_crash_tail_only_if_it_extends_the_chain(tmp_path: Path) -> None:
    trail = _fill(tmp_path, records=8, batch=4)
    last = parse_record_line(_lines(trail)[-1])
    good = ChainWriter(last.seq, last.hash).next(_event(9))  # stored, then a crash before signing
    with open(trail, "ab") as fh:
        fh.write(good.line())
    AuditStore(tmp_path).close()
    assert verify_audit_dir(tmp_path / "audit").ok  # signed on restart
    forged = ChainWriter(9, "e" * 64).next(_event(10))  # does not link: never signed
    with open(trail, "ab") as fh:
        fh.write(forged.line())
    AuditStore(tmp_path).close()
    report = verify_audit_dir(tmp_path / "audit")
    assert ("inserted", 10) in {(p.kind, p.seq) for p in report.problems}
