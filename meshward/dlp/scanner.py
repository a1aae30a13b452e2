"""Multi-pattern scanning: one Hyperscan database for every candidate pattern, or ``re`` alone.

Both engines give the same findings, by construction:

- The *reference* semantics (the pure-Python engine) is: for each candidate pattern, in
  catalogue order, ``regex.finditer(data)`` with the pattern's guards; each match is confirmed
  by the pattern's validator; overlapping findings are resolved by :func:`resolve_overlaps`.
- The Hyperscan engine compiles the guard-less bodies into one database (``SOM_LEFTMOST``,
  compiled once per config generation) and scans the buffer once. Every match of a body is
  reported with its leftmost start, so every match of the guarded regex lies inside the union
  of the reported spans of its pattern. Running the same ``finditer`` on each merged region
  (``pos`` = region start, so look-behind still sees the byte before it; ``endpos`` = region
  end + 2, the widest look-ahead guard; matches starting past the region end are dropped, and
  a match reaching past it — the only kind a truncated negative look-ahead can invent — is
  decided again on the whole data) therefore yields exactly the reference matches, while
  Python only ever looks at the few bytes Hyperscan flagged.
- A pattern may give Hyperscan a cheaper ``prefilter`` (email: from the ``@``) with a
  ``reach_back``: the region then starts that many bytes earlier.
- A pattern whose ``after`` guard rejects every byte of a class X (``ends_before``) is given
  to Hyperscan as ``body([^X]|$)``: a reference match is always followed by a byte outside X
  or by the end, so it still lies in a region. This cuts the reports per value from one per
  possible end to about one (a 16-digit card: one report instead of four).

``tests/dlp/test_scanner.py`` checks the claim on generated text (Hypothesis).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from meshward.dlp.detectors import CandidatePattern

_hs: Any
try:  # pragma: no cover - exercised by whichever engine the machine has
    import hyperscan as _hs
except ImportError:  # pragma: no cover
    _hs = None

__all__ = ["HYPERSCAN_AVAILABLE", "Engine", "Finding", "Scanner", "hyperscan_problem", "resolve_overlaps"]

HYPERSCAN_AVAILABLE = _hs is not None
Engine = Literal["auto", "hyperscan", "re"]
_LOOKAHEAD_MARGIN = 2  # the widest ``after`` guard in the catalogue is two bytes


@dataclass(frozen=True, slots=True)
class Finding:
    """A confirmed value: which detector family and format, where (byte offsets)."""

    detector: str
    kind: str
    start: int
    end: int
    rank: int  # index of the pattern in the scanner: lower wins a tie


def resolve_overlaps(findings: list[Finding]) -> list[Finding]:
    """Sorted, non-overlapping findings: the earliest start, then the longest, then the rank."""
    findings.sort(key=lambda f: (f.start, f.start - f.end, f.rank))
    kept: list[Finding] = []
    last_end = -1
    for f in findings:
        if f.start >= last_end:
            kept.append(f)
            last_end = f.end
    return kept


def _hs_flags(p: CandidatePattern) -> int:
    assert _hs is not None
    flags: int = _hs.HS_FLAG_SOM_LEFTMOST
    if p.caseless:
        flags |= _hs.HS_FLAG_CASELESS
    return flags


def hyperscan_problem(body: bytes, caseless: bool = False) -> str | None:
    """Why Hyperscan refuses ``body`` (None if it compiles, or if Hyperscan is not installed)."""
    if _hs is None:
        return None
    db = _hs.Database(mode=_hs.HS_MODE_BLOCK)
    try:
        db.compile(
            expressions=[body],
            ids=[0],
            flags=[_hs_flags(CandidatePattern("x", "x", body, caseless=caseless))],
        )
    except _hs.error as exc:
        return str(exc)
    return None


class Scanner:
    """Finds confirmed values of a fixed set of candidate patterns in byte strings.

    Build once per config generation (compiling is milliseconds); :meth:`scan` is the hot path.
    Not thread-safe (one Hyperscan scratch per scanner): one scanner per event loop.
    """

    def __init__(self, patterns: Sequence[CandidatePattern], engine: Engine = "auto") -> None:
        self.patterns = tuple(patterns)
        self._regexes = [
            re.compile(p.python_regex(), re.IGNORECASE if p.caseless else 0) for p in self.patterns
        ]
        self._validators = [p.validator for p in self.patterns]
        # No value is shorter than this: shorter strings (JSON keys' values like "user") are skipped.
        self.min_length = min(
            (max(_min_width(r), p.min_length) for r, p in zip(self._regexes, self.patterns, strict=True)),
            default=0,
        )
        self._reach_back = [p.reach_back for p in self.patterns]
        self._any_reach_back = any(self._reach_back)
        if engine == "auto":
            engine = "hyperscan" if HYPERSCAN_AVAILABLE else "re"
        if engine == "hyperscan" and _hs is None:
            raise RuntimeError("hyperscan is not installed")
        self.engine: Literal["hyperscan", "re"] = engine
        self._db: Any = None
        if engine == "hyperscan" and self.patterns:
            assert _hs is not None
            self._db = _hs.Database(mode=_hs.HS_MODE_BLOCK)
            self._db.compile(
                expressions=[p.hyperscan_expression() for p in self.patterns],
                ids=list(range(len(self.patterns))),
                flags=[_hs_flags(p) for p in self.patterns],
            )

    def scan(self, data: bytes) -> list[Finding]:
        """Confirmed, non-overlapping findings in ``data``, sorted by position."""
        if not self.patterns or not data:
            return []
        if self._db is not None:
            return self._scan_hyperscan(data)
        found: list[Finding] = []
        for rank, regex in enumerate(self._regexes):
            for m in regex.finditer(data):
                self._confirm(rank, data, m.start(), m.end(), found)
        return resolve_overlaps(found) if len(found) > 1 else found

    def may_find(self, data: bytes) -> bool:
        """False only if no value can be found in ``data`` nor in any substring of it.

        With Hyperscan: whether any pattern's prefilter matches at all (stops at the first).
        A value inside a substring is followed there by the end of the substring, which in
        ``data`` is some byte; the prefilters accept any byte outside their ``ends_before``
        class or the end, and a JSON string's closing quote is never in such a class.
        """
        if not self.patterns or not data:
            return False
        if self._db is None:
            return any(regex.search(data) for regex in self._regexes)
        try:
            self._db.scan(data, match_event_handler=_stop)
        except _hs.ScanTerminated:
            return True
        return False

    def candidate_spans(self, data: bytes) -> list[tuple[int, int]]:
        """Spans (sorted by start) that together cover every value in ``data`` or in any
        substring of it — see :meth:`may_find`; with ``re``, one span over everything."""
        if not self.patterns or not data:
            return []
        if self._db is None:
            return [(0, len(data))] if self.may_find(data) else []
        hits: list[tuple[int, int, int]] = []
        self._db.scan(data, match_event_handler=_collect, context=hits)
        reach = self._reach_back
        return sorted((max(0, s - reach[r]), e) for r, s, e in hits)

    # -- internals

    def _confirm(self, rank: int, data: bytes, start: int, end: int, out: list[Finding]) -> None:
        validator = self._validators[rank]
        if validator is None:
            span: tuple[int, int] | None = (0, end - start)
        else:
            span = validator(data[start:end])
        if span is not None:
            p = self.patterns[rank]
            out.append(Finding(p.detector, p.kind, start + span[0], start + span[1], rank))

    def _scan_hyperscan(self, data: bytes) -> list[Finding]:
        hits: list[tuple[int, int, int]] = []
        self._db.scan(data, match_event_handler=_collect, context=hits)
        if not hits:
            return []
        if self._any_reach_back:
            reach = self._reach_back
            hits = [(r, max(0, s - reach[r]), e) for r, s, e in hits]
        hits.sort()
        found: list[Finding] = []
        regexes = self._regexes
        current = hits[0][0]
        region_start, region_end = hits[0][1], hits[0][2]
        for rank, start, end in hits[1:]:
            if rank == current and start <= region_end:
                if end > region_end:
                    region_end = end
                continue
            self._scan_region(regexes[current], current, data, region_start, region_end, found)
            current, region_start, region_end = rank, start, end
        self._scan_region(regexes[current], current, data, region_start, region_end, found)
        return resolve_overlaps(found) if len(found) > 1 else found

    def _scan_region(
        self, regex: re.Pattern[bytes], rank: int, data: bytes, start: int, end: int, out: list[Finding]
    ) -> None:
        # ``finditer`` over [start, end + 2): the truncation can only make a negative look-ahead
        # succeed where on the whole data it fails, so a match reaching past ``end`` (where no
        # reference match can end) is decided again on the whole data, anchored where it starts.
        # Matches starting at or after ``end`` belong to a later region.
        endpos = min(len(data), end + _LOOKAHEAD_MARGIN)
        pos = start
        while pos < end:
            m = regex.search(data, pos, endpos)
            if m is None or m.start() >= end:
                return
            if m.end() > end:
                full = regex.match(data, m.start())
                if full is None:
                    pos = m.start() + 1
                    continue
                m = full
            self._confirm(rank, data, m.start(), m.end(), out)
            pos = m.end()


def _min_width(regex: re.Pattern[bytes]) -> int:
    """The fewest bytes a match of ``regex`` can span (look-arounds span none)."""
    low: int = re._parser.parse(regex.pattern, regex.flags).getwidth()[0]  # type: ignore[attr-defined]
    return low


def _stop(rank: int, start: int, end: int, flags: int, context: object) -> bool:
    return True


def _collect(rank: int, start: int, end: int, flags: int, hits: list[tuple[int, int, int]]) -> None:
    hits.append((rank, start, end))
