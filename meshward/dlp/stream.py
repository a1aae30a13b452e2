"""Streaming inspection: rewrite a response as it flows, holding back a small window.

**Text streams** (chunked text): bytes are released up to a *cut* ``window`` bytes before the
end of what has arrived, snapped back to whitespace and moved back to the start of any finding
that spans it. Every value up to ``window`` bytes long is therefore seen whole before any of
its bytes leave, whatever the chunking; the added delay is at most ``window`` bytes.

**SSE streams** (``text/event-stream``): events are parsed as they complete. For JSON events
of an OpenAI-style stream, the streamed text of each choice — ``choices[i].delta.content``
and ``choices[i].text`` — is treated as one logical text per choice, concatenated across
events; every other string in an event is scanned within that event. Events are held in
order; a prefix of them is released when, for each choice, the content it carries lies
before that choice's cut. Cuts are only placed at event boundaries, and never inside a
finding, so a card number split over two ``delta.content`` tokens is replaced as a whole:
the replacement (``[CARD ****1111]``) goes into the event where the value starts, and the
value's bytes are removed from the following events (which keep their other fields).
Events that were not changed are released byte for byte. ``data: [DONE]`` releases everything.

A ``block`` finding raises :class:`StreamBlocked` before any of its bytes are released.
Values longer than the window (a whole PEM key, a long JWT) are caught only when they arrive
within one window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from meshward.dlp.body import walk_strings
from meshward.dlp.policy import DlpPlan
from meshward.dlp.redact import Outcome, Redactor, inspect_text
from meshward.dlp.scanner import Finding

__all__ = ["DEFAULT_WINDOW", "SseRewriter", "StreamBlocked", "TextRewriter"]

DEFAULT_WINDOW = 256


class StreamBlocked(Exception):
    """A ``block`` finding in a stream: nothing more may be released."""

    def __init__(self, policy: str, detector: str) -> None:
        super().__init__(f"blocked by {policy} ({detector})")
        self.policy = policy
        self.detector = detector


def _raise_if_blocked(outcome: Outcome) -> None:
    if outcome.blocked_by is not None:
        raise StreamBlocked(outcome.blocked_by, outcome.blocked_detector or "")


def _text_cut(buf: bytes, findings: list[Finding], window: int) -> int:
    """Where released text may end: ``window`` before the end, at whitespace, not in a finding."""
    cut = len(buf) - window
    if cut <= 0:
        return 0
    space = max(buf.rfind(b" ", max(0, cut - window), cut), buf.rfind(b"\n", max(0, cut - window), cut))
    if space >= 0:
        cut = space + 1
    for f in findings:
        if f.start < cut < f.end:
            cut = f.start
        elif f.start >= cut:
            break
    return cut


class TextRewriter:
    """Chunked text: ``feed`` returns what may be released now, ``finish`` the rest."""

    def __init__(
        self, plan: DlpPlan, redactor: Redactor, outcome: Outcome, window: int = DEFAULT_WINDOW
    ) -> None:
        self.plan, self.redactor, self.outcome, self.window = plan, redactor, outcome, window
        self._buf = b""

    def feed(self, chunk: bytes) -> bytes:
        buf = self._buf + chunk
        if len(buf) <= self.window:
            self._buf = buf
            return b""
        findings = self.plan.scanner.scan(buf)
        cut = _text_cut(buf, findings, self.window)
        settled = [f for f in findings if f.end <= cut]
        out = inspect_text(self.plan, self.redactor, buf[:cut], self.outcome, settled)
        _raise_if_blocked(self.outcome)
        self._buf = buf[cut:]
        return out

    def finish(self) -> bytes:
        buf, self._buf = self._buf, b""
        out = inspect_text(self.plan, self.redactor, buf, self.outcome)
        _raise_if_blocked(self.outcome)
        return out


@dataclass
class _Segment:
    """A piece of a choice's streamed text carried by one event."""

    choice: int
    start: int  # offset in the choice's pending text
    end: int
    holder: dict[str, Any]  # the dict that holds the string (delta or choice)
    key: str  # "content" or "text"


@dataclass
class _Event:
    raw: bytes  # the event as received (without the blank line)
    other_lines: list[bytes] = field(default_factory=list)  # non-data lines, in order
    doc: Any = None  # parsed JSON data, when the data is JSON
    data: bytes | None = None  # non-JSON data payload
    segments: list[_Segment] = field(default_factory=list)
    changed: bool = False


class SseRewriter:
    """``text/event-stream``: OpenAI-aware event rewriting with a per-choice window."""

    def __init__(
        self, plan: DlpPlan, redactor: Redactor, outcome: Outcome, window: int = DEFAULT_WINDOW
    ) -> None:
        self.plan, self.redactor, self.outcome, self.window = plan, redactor, outcome, window
        self._partial = b""
        self._queue: list[_Event] = []
        self._texts: dict[int, bytearray] = {}  # choice -> pending streamed text

    # -- wire level

    def feed(self, chunk: bytes) -> bytes:
        data = self._partial + chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        *complete, self._partial = data.split(b"\n\n")
        flush = False
        for raw in complete:
            if raw:
                flush = self._add(raw) or flush
        return self._release(final=flush)

    def finish(self) -> bytes:
        partial, self._partial = self._partial, b""
        if partial.strip():
            self._add(partial)
        return self._release(final=True)

    # -- events

    def _add(self, raw: bytes) -> bool:
        """Queue one event; True if it ends the stream (``[DONE]``)."""
        event = _Event(raw)
        data_lines: list[bytes] = []
        for line in raw.split(b"\n"):
            if line.startswith(b"data:"):
                value = line[5:]
                data_lines.append(value[1:] if value.startswith(b" ") else value)
            else:
                event.other_lines.append(line)
        if not data_lines:
            self._queue.append(event)
            return False
        payload = b"\n".join(data_lines)
        if payload.strip() == b"[DONE]":
            self._queue.append(event)
            return True
        try:
            event.doc = json.loads(payload)
        except ValueError:
            event.data = payload
            new = inspect_text(self.plan, self.redactor, payload, self.outcome)
            _raise_if_blocked(self.outcome)
            if new is not payload:
                event.data, event.changed = new, True
            self._queue.append(event)
            return False
        self._take_segments(event)
        self._queue.append(event)
        return False

    def _take_segments(self, event: _Event) -> None:
        """Detach the streamed strings of ``event`` and scan the rest of its strings in place."""
        doc = event.doc
        detached: list[tuple[dict[str, Any], str, str]] = []
        choices = doc.get("choices") if isinstance(doc, dict) else None
        if isinstance(choices, list):
            for position, choice in enumerate(choices):
                if not isinstance(choice, dict):
                    continue
                index = choice.get("index", position)
                index = index if isinstance(index, int) else position
                delta = choice.get("delta")
                holder, key = (delta, "content") if isinstance(delta, dict) else (choice, "text")
                value = holder.get(key)
                if isinstance(value, str) and value:
                    text = self._texts.setdefault(index, bytearray())
                    encoded = value.encode("utf-8", "surrogatepass")
                    event.segments.append(_Segment(index, len(text), len(text) + len(encoded), holder, key))
                    text += encoded
                    detached.append((holder, key, value))
                    holder[key] = ""
        event.doc, changed = walk_strings(self.plan, self.redactor, doc, self.outcome)
        event.changed = event.changed or changed
        _raise_if_blocked(self.outcome)
        for holder, key, value in detached:
            holder[key] = value

    # -- release

    def _release(self, final: bool) -> bytes:
        if not self._queue:
            return b""
        cuts: dict[int, int] = {}
        findings: dict[int, list[Finding]] = {}
        for choice, text in self._texts.items():
            buf = bytes(text)
            found = self.plan.scanner.scan(buf)
            boundaries = sorted({s.end for e in self._queue for s in e.segments if s.choice == choice})
            limit = len(buf) if final else len(buf) - self.window
            cut = 0
            for b in boundaries:
                if b > limit:
                    break
                if not any(f.start < b < f.end for f in found):
                    cut = b
            cuts[choice] = cut
            findings[choice] = [f for f in found if f.end <= cut]
        count = 0
        for event in self._queue:
            if any(s.end > cuts[s.choice] for s in event.segments):
                break
            count += 1
        if count == 0:
            return b""
        released, self._queue = self._queue[:count], self._queue[count:]
        for choice, cut in cuts.items():
            if cut:
                self._apply(choice, cut, findings[choice], released)
        return b"".join(self._render(e) for e in released)

    def _apply(self, choice: int, cut: int, findings: list[Finding], released: list[_Event]) -> None:
        """Rewrite the released segments of ``choice`` (text up to ``cut``), then drop that text."""
        text = bytes(self._texts[choice])
        local = Outcome()
        replacements: dict[int, bytes] = {}  # finding start -> replacement bytes
        covered: list[tuple[int, int]] = []
        for f in findings:
            new = inspect_text(self.plan, self.redactor, text[f.start : f.end], local, [_shift(f)])
            if new is not text[f.start : f.end] or local.blocked_by:
                replacements[f.start] = new
                covered.append((f.start, f.end))
        self.outcome.merge(local)
        _raise_if_blocked(self.outcome)
        for event in released:
            for seg in event.segments:
                if seg.choice != choice:
                    continue
                pieces: list[bytes] = []
                pos = seg.start
                for start, end in covered:
                    if end <= seg.start or start >= seg.end:
                        continue
                    if start >= pos:
                        pieces.append(text[pos:start])
                        pieces.append(replacements[start])
                    pos = max(pos, min(end, seg.end))
                if pieces or pos != seg.start:
                    pieces.append(text[pos : seg.end])
                    seg.holder[seg.key] = b"".join(pieces).decode("utf-8", "replace")
                    event.changed = True
        del self._texts[choice][:cut]
        for event in self._queue:
            for seg in event.segments:
                if seg.choice == choice:
                    seg.start -= cut
                    seg.end -= cut

    def _render(self, event: _Event) -> bytes:
        if not event.changed:
            return event.raw + b"\n\n"
        lines = list(event.other_lines)
        if event.doc is not None:
            payload = json.dumps(event.doc, ensure_ascii=False, separators=(",", ":")).encode(
                "utf-8", "surrogatepass"
            )
        else:
            payload = event.data or b""
        lines.extend(b"data: " + line for line in payload.split(b"\n"))
        return b"\n".join(lines) + b"\n\n"


def _shift(f: Finding) -> Finding:
    """The finding relative to its own value (for :func:`inspect_text` on the value alone)."""
    return Finding(f.detector, f.kind, 0, f.end - f.start, f.rank)
