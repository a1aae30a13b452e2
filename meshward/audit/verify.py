"""``meshward audit verify``: check every stored chain against itself and the signed checkpoints.

Pure over the files of an :class:`~meshward.audit.store.AuditStore` directory; each problem
names the chain, the record (``seq``) and the line in the trail file, and says what was done
to it:

- ``edited``     a record's content no longer matches its hash, or its hash was recomputed
                 and the next record no longer links to it;
- ``removed``    a sequence number is missing (or records a signed checkpoint covers are gone);
- ``reordered``  a record appears after one with a higher sequence number;
- ``inserted``   a second record claims a sequence number, or a record is not covered by any
                 signed checkpoint (appended behind the store's back);
- ``rewritten``  the chain is self-consistent but does not match a signed checkpoint (every
                 hash after an edit was recomputed);
- ``checkpoint`` a checkpoint's signature or linkage is broken.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from meshward.audit.chain import GENESIS, AuditRecord, RecordError, parse_record_line
from meshward.audit.checkpoint import CheckpointError, checkpoint_digest, load_public_key, verify_checkpoint
from meshward.audit.trail import read_index

__all__ = ["Problem", "VerifyReport", "verify_audit_dir"]


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    chain: str  # the trail slug
    message: str
    seq: int | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = []
        if self.seq is not None:
            where.append(f"record seq {self.seq}")
        if self.line is not None:
            where.append(f"line {self.line}")
        loc = f" ({', '.join(where)})" if where else ""
        return f"{self.chain}{loc}: {self.kind}: {self.message}"


@dataclass(slots=True)
class VerifyReport:
    chains: int = 0
    records: int = 0
    checkpoints: int = 0
    key_fingerprint: str | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "chains": self.chains,
            "records": self.records,
            "checkpoints": self.checkpoints,
            "key_fingerprint": self.key_fingerprint,
            "problems": [asdict(p) for p in self.problems],
        }


def _verify_checkpoints(audit_dir: Path, report: VerifyReport, pub: Path) -> list[dict[str, Any]]:
    """Signed checkpoints in order; problems for any bad one (which is then ignored)."""
    path = audit_dir / "checkpoints.jsonl"
    if not path.exists():
        return []
    if not pub.exists():
        report.problems.append(Problem("checkpoint", "-", f"{pub} is missing"))
        return []
    key = load_public_key(pub)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    report.key_fingerprint = "SHA256:" + hashlib.sha256(raw).hexdigest()
    good: list[dict[str, Any]] = []
    prev: str | None = GENESIS  # None: unknown (the checkpoint before was itself bad)
    for n, line in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            data = verify_checkpoint(line, key)
        except CheckpointError as exc:
            report.problems.append(Problem("checkpoint", "checkpoints.jsonl", str(exc), line=n))
            prev = None
            continue
        if prev is not None and data.get("prev") != prev:
            report.problems.append(
                Problem(
                    "checkpoint",
                    "checkpoints.jsonl",
                    f"checkpoint {data.get('n')} does not follow the one before it (removed or reordered)",
                    line=n,
                )
            )
        prev = checkpoint_digest(line)
        good.append(data)
    report.checkpoints = len(good)
    return good


def _verify_chain(slug: str, path: Path, checkpoints: list[dict[str, Any]], report: VerifyReport) -> None:
    problems = report.problems
    entries: list[tuple[int, AuditRecord]] = []  # (line number, record)
    if path.exists():
        for n, raw in enumerate(path.read_bytes().splitlines(), start=1):
            try:
                record = parse_record_line(raw, check_hash=False)
            except RecordError as exc:
                problems.append(Problem("edited", slug, f"line is not a valid record ({exc})", line=n))
                continue
            if not record.hash_ok():
                problems.append(
                    Problem("edited", slug, "content does not match the record's hash", record.seq, n)
                )
            entries.append((n, record))
    report.records += len(entries)

    # Duplicated sequence numbers: the impostor is the one the next record does not link to.
    by_seq: dict[int, list[tuple[int, AuditRecord]]] = {}
    for n, record in entries:
        by_seq.setdefault(record.seq, []).append((n, record))
    linked_prev = {record.prev for _, record in entries}
    genuine: dict[int, tuple[int, AuditRecord]] = {}
    for seq, claims in by_seq.items():
        if len(claims) == 1:
            genuine[seq] = claims[0]
            continue
        keep = [c for c in claims if c[1].hash in linked_prev and c[1].hash_ok()] or [claims[0]]
        genuine[seq] = keep[0]
        for n, record in claims:
            if (n, record) is not keep[0] and n != keep[0][0]:
                problems.append(Problem("inserted", slug, f"a second record claims seq {seq}", seq, n))

    # Order in the file: anything after a higher sequence number was moved.
    highest = 0
    for n, record in entries:
        if genuine.get(record.seq, (None,))[0] != n:
            continue
        if record.seq < highest:
            problems.append(
                Problem("reordered", slug, f"appears after seq {highest} in the file", record.seq, n)
            )
        highest = max(highest, record.seq)

    # Missing sequence numbers.
    last = max(genuine) if genuine else 0
    missing = [s for s in range(1, last + 1) if s not in genuine]
    for run_start, run_end in _runs(missing):
        what = f"seq {run_start}" if run_start == run_end else f"seq {run_start}..{run_end}"
        problems.append(Problem("removed", slug, f"{what} missing from the chain", run_start))

    # Links between consecutive records (an edit whose hash was recomputed shows here).
    flagged = {(p.seq, p.kind) for p in problems if p.chain == slug}
    for seq in sorted(genuine):
        n, record = genuine[seq]
        before = genuine.get(seq - 1)
        expected_prev = GENESIS if seq == 1 else (before[1].hash if before else None)
        if expected_prev is None or record.prev == expected_prev:
            continue
        if before is not None and (seq - 1, "edited") not in flagged:
            problems.append(
                Problem(
                    "edited",
                    slug,
                    f"its hash was recomputed: seq {seq} no longer links to it",
                    seq - 1,
                    before[0],
                )
            )
        elif seq == 1 and (1, "edited") not in flagged:
            problems.append(Problem("edited", slug, "first record does not start the chain", 1, n))

    # Signed checkpoints: heads must match, and nothing they cover may be gone.
    covered = 0
    previous_match = 0
    for cp in checkpoints:
        entry = cp["chains"].get(slug)
        if entry is None:
            continue
        seq, digest = int(entry["seq"]), entry["hash"]
        covered = max(covered, seq)
        have = genuine.get(seq)
        if have is None:
            if seq > last:
                problems.append(
                    Problem(
                        "removed",
                        slug,
                        f"records after seq {last} are gone; signed checkpoint {cp['n']} covers up to seq {seq}",
                        last + 1,
                    )
                )
            continue
        if have[1].hash != digest:
            problems.append(
                Problem(
                    "rewritten",
                    slug,
                    f"a record in seq {previous_match + 1}..{seq} was changed and the chain re-hashed: "
                    f"seq {seq} does not match signed checkpoint {cp['n']}",
                    seq,
                    have[0],
                )
            )
        else:
            previous_match = seq
    if checkpoints and last > covered:
        problems.append(
            Problem(
                "inserted",
                slug,
                f"seq {covered + 1}..{last} not covered by any signed checkpoint",
                covered + 1,
                genuine[covered + 1][0] if covered + 1 in genuine else None,
            )
        )


def _runs(values: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and runs[-1][1] == v - 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


def verify_audit_dir(audit_dir: Path, public_key: Path | None = None) -> VerifyReport:
    """Verify every chain in ``audit_dir`` (``<state>/audit``).

    ``public_key``: the checkpoint key the auditor trusts (kept apart from the trail); by
    default the trail's own ``checkpoint.pub``, which whoever can rewrite the trail could also
    replace — compare ``key_fingerprint`` with a copy kept elsewhere.
    """
    report = VerifyReport()
    checkpoints = _verify_checkpoints(audit_dir, report, public_key or audit_dir / "checkpoint.pub")
    trail = audit_dir / "trail"
    index = read_index(trail)
    slugs = set(index)
    for cp in checkpoints:
        slugs.update(cp["chains"])
    if trail.exists():
        slugs.update(p.name[: -len(".jsonl")] for p in trail.glob("*.jsonl"))
    for slug in sorted(slugs):
        path = trail / f"{slug}.jsonl"
        if slug not in index:
            report.problems.append(Problem("inserted", slug, "chain not registered in the chain index"))
        if not path.exists():
            report.problems.append(Problem("removed", slug, "the whole chain file is missing"))
        report.chains += 1
        _verify_chain(slug, path, checkpoints, report)
    return report
