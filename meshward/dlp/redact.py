"""Apply DLP actions to a byte string: what replaces a finding, and the outcome of one text.

Replacements (ASCII, JSON-safe, never containing the value itself):

- ``mask``    ``[CARD ****1111]``: a type tag, and for cards, IBANs, national IDs and phone
  numbers the last four characters (what a receipt shows); ``[EMAIL ****]`` otherwise.
- ``redact``  ``[REDACTED:credit_card]``.
- ``hash``    ``[HASH:email:1a2b3c4d5e6f]``: HMAC-SHA256 of the normalized value under a key of
  the sidecar, truncated to 48 bits. The same value gives the same tag (joins and counts still
  work downstream); without the key, the tag cannot be reversed by hashing guesses.
- ``log``     the value stays; the finding is counted.
- ``block``   the text is not rewritten; the caller refuses the whole body.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field

from meshward.dlp.policy import DlpPlan, normalize_value
from meshward.dlp.scanner import Finding

__all__ = ["Outcome", "Redactor", "inspect_text"]

_MASK_TAGS = {
    "email": b"EMAIL",
    "phone": b"PHONE",
    "credit_card": b"CARD",
    "iban": b"IBAN",
    "national_id": b"NATIONAL_ID",
    "ip_address": b"IP",
    "secrets": b"SECRET",
}
_NOT_ALNUM = re.compile(rb"[^0-9A-Za-z]+")
_KEEP_LAST_FOUR = frozenset({"credit_card", "iban", "national_id", "phone"})


class Redactor:
    """Turns a finding and its action into replacement bytes. One per sidecar (holds the key)."""

    def __init__(self, hash_key: bytes) -> None:
        if len(hash_key) < 16:
            raise ValueError("the DLP hash key must be at least 16 bytes")
        self._key = hash_key

    def replacement(self, action: str, finding: Finding, value: bytes) -> bytes:
        detector = finding.detector
        if action == "redact":
            return b"[REDACTED:" + detector.encode() + b"]"
        if action == "hash":
            digest = hmac.new(self._key, normalize_value(value), hashlib.sha256).hexdigest()[:12]
            return b"[HASH:" + detector.encode() + b":" + digest.encode() + b"]"
        tag = _MASK_TAGS.get(detector) or detector.upper().encode()
        if detector in _KEEP_LAST_FOUR:
            tail = _NOT_ALNUM.sub(b"", value)[-4:]
            if len(tail) == 4:
                return b"[" + tag + b" ****" + tail + b"]"
        return b"[" + tag + b" ****]"


@dataclass
class Outcome:
    """What inspecting some text found and did. ``counts`` are per detector, never values."""

    counts: dict[str, int] = field(default_factory=dict)
    blocked_by: str | None = None  # "ns/name" of a policy whose action is block
    blocked_detector: str | None = None
    changed: bool = False

    def merge(self, other: Outcome) -> None:
        for k, n in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + n
        if self.blocked_by is None and other.blocked_by is not None:
            self.blocked_by, self.blocked_detector = other.blocked_by, other.blocked_detector
        self.changed = self.changed or other.changed


_MAX_RESCANS = 2


def inspect_text(
    plan: DlpPlan,
    redactor: Redactor,
    data: bytes,
    outcome: Outcome,
    findings: list[Finding] | None = None,
    _depth: int = 0,
) -> bytes:
    """Scan ``data`` (unless ``findings`` are given), record them in ``outcome``, return the
    rewritten bytes (``data`` itself when nothing changes or when a policy blocks). When this
    function scanned ``data`` itself (a whole text), rewritten text is scanned again (at most
    twice) for values an overlapping finding hid; given ``findings`` (a stream's prefix, whose
    end is a cut, not the text's end) are taken as they are."""
    findings_given = findings is not None
    if findings is None:
        findings = plan.scanner.scan(data)
    if not findings:
        return data
    pieces: list[bytes] = []
    last = 0
    for f in findings:
        value = data[f.start : f.end]
        decision = plan.decide(f, value)
        if decision is None:
            continue
        outcome.counts[f.detector] = outcome.counts.get(f.detector, 0) + 1
        if decision.action == "block":
            if outcome.blocked_by is None:
                outcome.blocked_by, outcome.blocked_detector = decision.policy, f.detector
            continue
        if decision.action == "log":
            continue
        pieces.append(data[last : f.start])
        pieces.append(redactor.replacement(decision.action, f, value))
        last = f.end
    if not pieces:
        return data
    pieces.append(data[last:])
    outcome.changed = True
    result = b"".join(pieces)
    if _depth < _MAX_RESCANS and (findings_given is False or _depth > 0):
        # A value glued to the one just replaced (``a@x.com+b@x.com``) overlaps it, so the
        # scan could not report both; once the first is replaced the second stands alone.
        hidden = [
            f
            for f in plan.scanner.scan(result)
            if (d := plan.decide(f, result[f.start : f.end])) is not None and d.action != "log"
        ]
        if hidden:
            return inspect_text(plan, redactor, result, outcome, hidden, _depth + 1)
    return result
