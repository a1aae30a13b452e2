"""Streaming inspection: rewrite a response as it flows, holding back a small window.

**Text streams** (chunked text): bytes are released up to a *cut* ``window`` bytes before the
end of what has arrived, snapped back to whitespace and moved back to the start of any finding
that spans it. Every value up to ``window`` bytes long is therefore seen whole before any of
its bytes leave, whatever the chunking; the added delay is at most ``window`` bytes.

**SSE streams** (``text/event-stream``): events are parsed as they complete. Every streamed
text field (:func:`streamed_fields`: ``choices[i].delta.content`` and ``choices[i].text``,
tool-call ``function.arguments``, the Responses API's ``response.*.delta`` events, ...) is
treated as one logical text per stream, concatenated across events; every other string in an
event is scanned within that event. Events are held in
order; a prefix of them is released when, for each choice, the content it carries lies
before that choice's cut. Cuts are only placed at event boundaries, and never inside a
finding, so a card number split over two ``delta.content`` tokens is replaced as a whole:
the replacement (``[CARD ****1111]``) goes into the event where the value starts, and the
value's bytes are removed from the following events (which keep their other fields).
Events that were not changed are released byte for byte. ``data: [DONE]`` releases everything.
The pending text is rescanned only when ``window/4`` new bytes have arrived past the window,
so an event waits for at most ``1.25 × window`` bytes of later content.

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

__all__ = [
    "DEFAULT_WINDOW",
    "NdjsonRewriter",
    "SseRewriter",
    "StreamBlocked",
    "StreamKey",
    "TextRewriter",
    "streamed_fields",
]

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


_LEFT_CONTEXT = 64  # released bytes kept so a scan of what follows sees what precedes it


def _scan_after(plan: DlpPlan, left: bytes, text: bytes) -> list[Finding]:
    """Findings in ``text`` as a scan of ``left + text`` reports them (``left`` was released):
    a value glued to what came before is judged in its context, wherever the last cut fell."""
    if not left:
        return plan.scanner.scan(text)
    skip = len(left)
    return [
        Finding(f.detector, f.kind, f.start - skip, f.end - skip, f.rank)
        for f in plan.scanner.scan(left + text)
        if f.start >= skip
    ]


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
        self._left = b""  # the end of what was released (context for the next scan)

    def feed(self, chunk: bytes) -> bytes:
        buf = self._buf + chunk
        if len(buf) <= self.window:
            self._buf = buf
            return b""
        findings = _scan_after(self.plan, self._left, buf)
        cut = _text_cut(buf, findings, self.window)
        settled = [f for f in findings if f.end <= cut]
        out = inspect_text(self.plan, self.redactor, buf[:cut], self.outcome, settled)
        _raise_if_blocked(self.outcome)
        self._left = (self._left + buf[:cut])[-_LEFT_CONTEXT:]
        self._buf = buf[cut:]
        return out

    def finish(self) -> bytes:
        buf, self._buf = self._buf, b""
        findings = _scan_after(self.plan, self._left, buf)
        out = inspect_text(self.plan, self.redactor, buf, self.outcome, findings)
        _raise_if_blocked(self.outcome)
        return out


StreamKey = tuple[object, ...]


def streamed_fields(doc: Any) -> list[tuple[StreamKey, dict[str, Any], str]]:
    """Every streamed text field of one event: ``(stream, holder, key)`` with ``holder[key]`` a
    non-empty string. The pieces of one ``stream`` across events are one logical text.

    - OpenAI chat/completions: ``choices[i].delta.content``, ``choices[i].text``,
      ``choices[i].delta.refusal``, ``choices[i].delta.reasoning_content``, tool calls'
      ``choices[i].delta.tool_calls[j].function.arguments`` and the legacy
      ``choices[i].delta.function_call.arguments``;
    - OpenAI Responses API: any ``response.*.delta`` event's ``delta`` (output text, refusal,
      function-call arguments, reasoning, audio transcript), one stream per event type, output
      item and content part;
    - Anthropic-style ``content_block_delta`` (``delta.text``, ``delta.partial_json``,
      ``delta.thinking``) per content block; OIP/Triton ``text_output``; TGI ``token.text``;
      Ollama's ``message.content``/``message.thinking`` (chat) and ``response`` (generate).
    """
    out: list[tuple[StreamKey, dict[str, Any], str]] = []
    if not isinstance(doc, dict):
        return out

    def take(stream: StreamKey, holder: Any, key: str) -> None:
        if isinstance(holder, dict) and isinstance(holder.get(key), str) and holder[key]:
            out.append((stream, holder, key))

    choices = doc.get("choices")
    if isinstance(choices, list):
        for position, choice in enumerate(choices):
            if not isinstance(choice, dict):
                continue
            index = _index(choice, position)
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                take(("choice", index, "text"), choice, "text")
                continue
            for key in ("content", "refusal", "reasoning_content", "reasoning"):
                take(("choice", index, key), delta, key)
            function_call = delta.get("function_call")
            if isinstance(function_call, dict):
                take(("choice", index, "function_call"), function_call, "arguments")
            tool_calls = delta.get("tool_calls")
            if isinstance(tool_calls, list):
                for slot, call in enumerate(tool_calls):
                    if not isinstance(call, dict):
                        continue
                    take(("choice", index, "tool", _index(call, slot)), call.get("function"), "arguments")
    kind = doc.get("type")
    if isinstance(kind, str):
        if kind.startswith("response.") and kind.endswith(".delta"):
            where = tuple(doc.get(k) for k in ("output_index", "content_index", "summary_index", "item_id"))
            take(("response", kind, *(w if isinstance(w, (int, str)) else None for w in where)), doc, "delta")
        elif kind == "content_block_delta":
            block = _index(doc, -1)
            for key in ("text", "partial_json", "thinking"):
                take(("block", block, key), doc.get("delta"), key)
    take(("text_output",), doc, "text_output")
    message = doc.get("message")  # Ollama /api/chat: message.content, message.thinking
    for key in ("content", "thinking"):
        take(("message", key), message, key)
    take(("response",), doc, "response")  # Ollama /api/generate
    take(("token",), doc.get("token"), "text")
    return out


def _index(item: dict[str, Any], position: int) -> int:
    """An item's ``index`` field, or its position in the list when that is not an integer."""
    value = item.get("index", position)
    return value if isinstance(value, int) and not isinstance(value, bool) else position


@dataclass
class _Segment:
    """A piece of a stream's text carried by one event."""

    choice: StreamKey  # the stream (see :func:`streamed_fields`)
    start: int  # offset in the stream's text (from the start of the stream)
    end: int
    holder: dict[str, Any]  # the dict that holds the string (delta, choice, event...)
    key: str  # "content", "text", "arguments", "delta"...


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
        self._cr_pending = False  # the last chunk ended with CR (its LF may start the next)
        self._queue: list[_Event] = []
        self._texts: dict[StreamKey, bytearray] = {}  # stream -> pending streamed text
        self._base: dict[StreamKey, int] = {}  # stream -> offset of the pending text's first byte
        self._ends: dict[StreamKey, list[int]] = {}  # stream -> offsets where queued segments end
        self._left: dict[StreamKey, bytes] = {}  # stream -> the end of its released text
        # Rescan only once this much new text has arrived past the window (fewer scans, and
        # several events released together; at most ``slack`` more delay).
        self.slack = max(16, window // 4)

    # -- wire level

    separator = b"\n\n"  # what ends an event on the wire

    def feed(self, chunk: bytes) -> bytes:
        data = self._partial + self._newlines(chunk)
        *complete, self._partial = data.split(self.separator)
        flush = False
        for raw in complete:
            if raw:
                flush = self._add(raw) or flush
        return self._release(final=flush)

    def _newlines(self, chunk: bytes) -> bytes:
        """CRLF, CR and LF all end a line (the SSE spec; httpx's ``iter_lines`` too): each becomes
        LF exactly once, a CRLF split across two chunks included."""
        if self._cr_pending and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._cr_pending = chunk.endswith(b"\r")
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return chunk

    def finish(self) -> bytes:
        partial, self._partial = self._partial, b""
        if partial.strip():
            self._add(partial)
        return self._release(final=True)

    # -- events

    def _add(self, raw: bytes) -> bool:
        """Queue one event; True if it ends the stream (``[DONE]``)."""
        event = _Event(raw)
        data_lines = self._data_lines(event, raw)
        if not data_lines:
            self._queue.append(event)
            return False
        payload = b"\n".join(data_lines)
        if payload.strip() == b"[DONE]":
            self._queue.append(event)
            return True
        try:
            event.doc = json.loads(payload)
        except (ValueError, RecursionError):
            event.data = payload
            new = inspect_text(self.plan, self.redactor, payload, self.outcome)
            _raise_if_blocked(self.outcome)
            if new is not payload:
                event.data, event.changed = new, True
            self._queue.append(event)
            return False
        self._take_segments(event, payload)
        self._queue.append(event)
        return False

    @staticmethod
    def _data_lines(event: _Event, raw: bytes) -> list[bytes]:
        """The ``data:`` lines of an event (the others go to ``event.other_lines``)."""
        data_lines: list[bytes] = []
        for line in raw.split(b"\n"):
            if line.startswith(b"data:"):
                value = line[5:]
                data_lines.append(value[1:] if value.startswith(b" ") else value)
            else:
                event.other_lines.append(line)
        return data_lines

    def _take_segments(self, event: _Event, payload: bytes) -> None:
        """Detach the streamed strings of ``event`` and scan the rest of its strings in place."""
        doc = event.doc
        detached: list[tuple[dict[str, Any], str, str]] = []
        for stream, holder, key in streamed_fields(doc):
            value = holder[key]
            text = self._texts.setdefault(stream, bytearray())
            start = self._base.setdefault(stream, 0) + len(text)
            encoded = value.encode("utf-8", "surrogatepass")
            event.segments.append(_Segment(stream, start, start + len(encoded), holder, key))
            self._ends.setdefault(stream, []).append(start + len(encoded))
            text += encoded
            detached.append((holder, key, value))
            holder[key] = ""
        if b"\\" in payload or self.plan.scanner.may_find(payload):  # else no string holds a value
            try:
                event.doc, changed = walk_strings(self.plan, self.redactor, doc, self.outcome)
            except RecursionError:
                raise StreamBlocked(
                    self.plan.fail_policy, "uninspectable event"
                ) from None  # pathological nesting
            event.changed = event.changed or changed
            _raise_if_blocked(self.outcome)
        for holder, key, value in detached:
            holder[key] = value

    # -- release

    def _release(self, final: bool) -> bytes:
        if not self._queue:
            return b""
        cuts: dict[StreamKey, int] = {}  # stream -> offset up to which text may be released
        found: dict[StreamKey, list[Finding]] = {}
        for choice, text in self._texts.items():
            base = self._base[choice]
            cuts[choice] = base
            if not final and len(text) < self.window + self.slack:
                continue
            found[choice] = hits = _scan_after(self.plan, self._left.get(choice, b""), bytes(text))
            limit = base + len(text) if final else base + len(text) - self.window
            for end in self._ends[choice]:
                if end > limit:
                    break
                if not any(f.start < end - base < f.end for f in hits):
                    cuts[choice] = end
        count = 0
        for event in self._queue:
            if any(seg.end > cuts[seg.choice] for seg in event.segments):
                break
            count += 1
        # An event of one stream may hold back the events after it: each stream releases only
        # the text of the events released, and never up to inside a finding.
        count, cuts = self._released_cuts(count, found)
        if count == 0:
            return b""
        released, self._queue = self._queue[:count], self._queue[count:]
        for choice, cut in cuts.items():
            base = self._base[choice]
            if cut > base:
                settled = [f for f in found[choice] if f.end <= cut - base]
                self._apply(choice, cut, settled, released)
        return b"".join(self._render(e) for e in released)

    def _released_cuts(
        self, count: int, found: dict[StreamKey, list[Finding]]
    ) -> tuple[int, dict[StreamKey, int]]:
        """The events to release (at most ``count``) and where each stream's released text ends."""
        while True:
            cuts = dict(self._base)
            for event in self._queue[:count]:
                for seg in event.segments:
                    cuts[seg.choice] = max(cuts[seg.choice], seg.end)
            split: tuple[StreamKey, int] | None = None
            for choice, cut in cuts.items():
                base = self._base[choice]
                for f in found.get(choice, ()):
                    if base + f.start < cut < base + f.end:
                        split = (choice, base + f.start)
                        break
                if split is not None:
                    break
            if split is None:
                return count, cuts
            choice, start = split  # stop before the event where that finding starts
            count = next(
                i
                for i, event in enumerate(self._queue[:count])
                if any(seg.choice == choice and seg.end > start for seg in event.segments)
            )

    def _apply(self, choice: StreamKey, cut: int, findings: list[Finding], released: list[_Event]) -> None:
        """Rewrite the released segments of ``choice`` (text up to ``cut``), then drop that text."""
        text = bytes(self._texts[choice])
        base = self._base[choice]
        local = Outcome()
        replacements: dict[int, bytes] = {}  # finding start (in ``text``) -> replacement bytes
        covered: list[tuple[int, int]] = []
        for f in findings:
            new = inspect_text(self.plan, self.redactor, text[f.start : f.end], local, [_shift(f)])
            if new is not text[f.start : f.end] or local.blocked_by:
                replacements[f.start] = new
                covered.append((f.start, f.end))
        self.outcome.merge(local)
        _raise_if_blocked(self.outcome)
        if covered:
            for event in released:
                for seg in event.segments:
                    if seg.choice == choice:
                        self._rewrite_segment(event, seg, text, base, covered, replacements)
        self._left[choice] = (self._left.get(choice, b"") + text[: cut - base])[-_LEFT_CONTEXT:]
        del self._texts[choice][: cut - base]
        self._base[choice] = cut
        ends = self._ends[choice]
        del ends[: sum(1 for e in ends if e <= cut)]

    @staticmethod
    def _rewrite_segment(
        event: _Event,
        seg: _Segment,
        text: bytes,
        base: int,
        covered: list[tuple[int, int]],
        replacements: dict[int, bytes],
    ) -> None:
        """A finding's replacement goes where it starts; its bytes leave every segment."""
        start, end = seg.start - base, seg.end - base
        pieces: list[bytes] = []
        pos = start
        for f_start, f_end in covered:
            if f_end <= start or f_start >= end:
                continue
            if f_start >= pos:
                pieces.append(text[pos:f_start])
                pieces.append(replacements[f_start])
            pos = max(pos, min(f_end, end))
        if pieces or pos != start:
            pieces.append(text[pos:end])
            seg.holder[seg.key] = b"".join(pieces).decode("utf-8", "replace")
            event.changed = True

    def _render(self, event: _Event) -> bytes:
        if not event.changed:
            return event.raw + self.separator
        lines = list(event.other_lines)
        if event.doc is not None:
            payload = json.dumps(event.doc, ensure_ascii=False, separators=(",", ":")).encode(
                "utf-8", "surrogatepass"
            )
        else:
            payload = event.data or b""
        lines.extend(b"data: " + line for line in payload.split(b"\n"))
        return b"\n".join(lines) + b"\n\n"


class NdjsonRewriter(SseRewriter):
    """``application/x-ndjson`` streams (Ollama's native API): one JSON document per line, with
    the same per-stream treatment of streamed text fields as SSE events."""

    separator = b"\n"

    @staticmethod
    def _data_lines(event: _Event, raw: bytes) -> list[bytes]:
        return [raw]

    def _render(self, event: _Event) -> bytes:
        if not event.changed:
            return event.raw + b"\n"
        if event.doc is not None:
            return (
                json.dumps(event.doc, ensure_ascii=False, separators=(",", ":")).encode(
                    "utf-8", "surrogatepass"
                )
                + b"\n"
            )
        return (event.data or b"").replace(b"\n", b" ") + b"\n"


def _shift(f: Finding) -> Finding:
    """The finding relative to its own value (for :func:`inspect_text` on the value alone)."""
    return Finding(f.detector, f.kind, 0, f.end - f.start, f.rank)
