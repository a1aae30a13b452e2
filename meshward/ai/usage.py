"""Token usage of OpenAI-compatible calls: read from responses, estimated when absent.

- :class:`UsageMeter` watches a response body as it streams by, without holding the stream:
  for ``text/event-stream`` it parses SSE events incrementally (only a partial line is
  kept) and takes the ``usage`` object of the final chunk when the server sends one, else
  counts the streamed text; for JSON it keeps the body up to a cap and reads ``usage`` at
  the end (past 1 MiB only a 64 KiB tail is kept and ``usage`` is looked for there:
  OpenAI-style servers put it last, even after megabytes of embeddings). Chat Completions
  (``prompt_tokens``/``completion_tokens``) and Responses (``input_tokens``/
  ``output_tokens``, also inside ``response.completed``) are understood.
  ``gzip``/``deflate`` bodies are inflated on the side, with a bound on the inflated size.
- When the model reports nothing, :meth:`UsageMeter.result` estimates output tokens from
  the text seen and input tokens from the prompt estimate, and marks the usage estimated.
- The prompt estimate made before the call is the classifier's
  (:func:`meshward.ai.protocol.estimate_prompt_tokens`, same rule of thumb).

Estimates use ~4 characters per token (the usual rule of thumb for English BPE
vocabularies), rounded up: a budget check would rather over- than under-count.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from typing import Any

from meshward.ai.types import TokenUsage

__all__ = [
    "UsageMeter",
    "estimate_text_tokens",
    "usage_from_json",
]

_CHARS_PER_TOKEN = 4
_MAX_JSON_BODY = 1024 * 1024  # parsed whole below this size
_JSON_TAIL = 64 * 1024  # above it, only the tail is kept (OpenAI puts ``usage`` last)
_INFLATE_STEP = 256 * 1024
_MAX_INFLATED = 256 * 1024 * 1024  # a compression bomb is not inflated further
_MAX_LINE = 1024 * 1024


def estimate_text_tokens(text: str) -> int:
    """Tokens in ``text``, estimated (rounded up; 0 for empty text)."""
    return -(-len(text) // _CHARS_PER_TOKEN)


def _text_of(content: Any) -> Iterable[str]:
    """The text parts of a message ``content`` (a string or a list of typed parts)."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                yield part
            elif isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    yield text


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def usage_from_json(obj: Any) -> TokenUsage | None:
    """The reported usage in a response object or stream chunk, or None when there is none."""
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        inner = obj.get("response")  # Responses API stream: response.completed
        usage = inner.get("usage") if isinstance(inner, dict) else None
        if not isinstance(usage, dict):
            return None
    prompt = _int(usage.get("prompt_tokens"))
    if prompt is None:
        prompt = _int(usage.get("input_tokens"))
    completion = _int(usage.get("completion_tokens"))
    if completion is None:
        completion = _int(usage.get("output_tokens"))
    if prompt is None and completion is None:
        total = _int(usage.get("total_tokens"))
        if total is None:
            return None
        return TokenUsage(input=total, output=0)
    return TokenUsage(input=prompt or 0, output=completion or 0)


def _streamed_text_chars(obj: Any) -> int:
    """Characters of generated text in one stream chunk (chat deltas, completions, responses)."""
    if not isinstance(obj, dict):
        return 0
    chars = 0
    choices = obj.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                for key in ("content", "reasoning_content", "refusal"):
                    value = delta.get(key)
                    if isinstance(value, str):
                        chars += len(value)
                calls = delta.get("tool_calls")
                if isinstance(calls, list):
                    chars += len(json.dumps(calls))
            text = choice.get("text")
            if isinstance(text, str):
                chars += len(text)
            message = choice.get("message")
            if isinstance(message, dict):
                chars += sum(len(t) for t in _text_of(message.get("content")))
    if obj.get("type") == "response.output_text.delta":
        delta_text = obj.get("delta")
        if isinstance(delta_text, str):
            chars += len(delta_text)
    return chars


def _usage_in_tail(tail: bytes) -> TokenUsage | None:
    """The last ``"usage": {...}`` object in the tail of a JSON document too big to keep."""
    at = tail.rfind(b'"usage"')
    while at >= 0:
        colon = tail.find(b":", at + 7)
        if colon >= 0:
            text = tail[colon + 1 :].decode("utf-8", "replace").lstrip()
            try:
                value, _ = json.JSONDecoder().raw_decode(text)
            except ValueError:
                value = None
            usage = usage_from_json({"usage": value})
            if usage is not None:
                return usage
        at = tail.rfind(b'"usage"', 0, at)
    return None


class UsageMeter:
    """Incremental usage reader for one response body (create one per response)."""

    __slots__ = (
        "_buffer",
        "_chars",
        "_failed",
        "_inflate",
        "_inflated",
        "_line",
        "_mode",
        "_overflow",
        "_reported",
        "_tail_only",
        "_wire_bytes",
        "max_inflated",
        "started",
    )

    def __init__(self, max_inflated: int = _MAX_INFLATED) -> None:
        self.max_inflated = max_inflated
        self._mode = "none"  # sse | json | none
        self._inflate: Any = None
        self._line = bytearray()
        self._buffer = bytearray()
        self._reported: TokenUsage | None = None
        self._chars = 0
        self._wire_bytes = 0
        self._inflated = 0
        self._overflow = False
        self._failed = False
        self._tail_only = False
        self.started = False

    def start(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        """See the response head: picks SSE or JSON parsing, and decompression."""
        self.started = True
        ctype = ""
        encoding = ""
        for name, value in headers:
            lname = name.lower()
            if lname == "content-type":
                ctype = value.lower()
            elif lname == "content-encoding":
                encoding = value.lower().strip()
        if status >= 400:
            self._failed = True  # the model refused or failed: nothing was generated
        elif status >= 300:
            self._mode = "none"
        elif "text/event-stream" in ctype:
            self._mode = "sse"
        elif "json" in ctype:
            self._mode = "json"
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
        elif encoding not in ("", "identity"):
            self._overflow = True  # cannot read (br, zstd): estimate from the wire size

    @property
    def reported(self) -> TokenUsage | None:
        return self._reported

    def feed(self, chunk: bytes) -> None:
        """One body chunk, as it passes (never modified, never held)."""
        if self._mode == "none" or not chunk:
            return
        self._wire_bytes += len(chunk)
        if self._overflow:
            return
        if self._inflate is None:
            self._consume(chunk)
            return
        data = chunk
        try:  # inflate in bounded steps; stop reading (estimate) past _MAX_INFLATED
            while data:
                piece = self._inflate.decompress(data, _INFLATE_STEP)
                self._inflated += len(piece)
                if self._inflated > self.max_inflated:
                    self._overflow = True
                    return
                self._consume(piece)
                data = self._inflate.unconsumed_tail
        except zlib.error:
            self._overflow = True

    def _consume(self, data: bytes) -> None:
        if self._mode == "sse":
            self._feed_sse(data)
            return
        buffer = self._buffer
        buffer += data
        if len(buffer) > _MAX_JSON_BODY:  # too big to parse whole: keep the tail (usage is last)
            self._tail_only = True
            del buffer[:-_JSON_TAIL]

    def _feed_sse(self, data: bytes) -> None:
        line = self._line
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                if len(line) + len(data) - start <= _MAX_LINE:
                    line += data[start:]
                else:
                    line.clear()  # an absurd line: drop it, keep reading the stream
                return
            if line:
                line += data[start:nl]
                self._event_line(bytes(line))
                line.clear()
            else:
                self._event_line(data[start:nl])
            start = nl + 1

    def _event_line(self, raw: bytes) -> None:
        if not raw.startswith(b"data:"):
            return
        payload = raw[5:].strip()
        if not payload or payload == b"[DONE]" or payload[:1] != b"{":
            return
        try:
            obj = json.loads(payload)
        except ValueError:
            return
        usage = usage_from_json(obj)
        if usage is not None:
            self._reported = usage
        self._chars += _streamed_text_chars(obj)

    def finish(self) -> None:
        """The body ended: parse what was kept (a trailing SSE line, the JSON body)."""
        if self._mode == "sse" and self._line:
            self._event_line(bytes(self._line).rstrip(b"\r"))
            self._line.clear()
        elif self._mode == "json" and self._buffer and not self._overflow:
            if self._tail_only:
                usage = _usage_in_tail(bytes(self._buffer))
                if usage is None:
                    self._overflow = True  # estimate from the wire size
            else:
                try:
                    obj = json.loads(self._buffer)
                except ValueError:
                    obj = None
                usage = usage_from_json(obj)
                if usage is None:
                    self._chars += _streamed_text_chars(obj)
            self._buffer.clear()
            if usage is not None:
                self._reported = usage

    def result(self, prompt_estimate: int | None) -> TokenUsage:
        """Reported usage, or an estimate (marked) from the text seen and the prompt estimate.

        An error response (4xx/5xx) without usage counts nothing: the model produced nothing.
        """
        if self._reported is not None:
            return self._reported
        if self._failed:
            return TokenUsage(input=0, output=0, estimated=True)
        if self._mode == "none":
            return TokenUsage(input=prompt_estimate or 0, output=0, estimated=True)
        chars = self._chars if not self._overflow else self._wire_bytes
        return TokenUsage(input=prompt_estimate or 0, output=-(-chars // _CHARS_PER_TOKEN), estimated=True)
