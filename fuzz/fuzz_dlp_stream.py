"""Fuzz target: the streaming DLP rewriters (SSE events with every streamed text field, NDJSON
lines, and chunked text); the property checked: no exception escapes, and however the bytes are chunked
the client receives the same stream as when they arrive in one piece (for values up to half
the window long: a longer one may leave in part before it is whole, as documented)."""

from __future__ import annotations

import json
import sys

import atheris

with atheris.instrument_imports():
    from fuzz.dlp_setup import PLANS, REDACTOR
    from meshward.dlp.redact import Outcome
    from meshward.dlp.stream import NdjsonRewriter, SseRewriter, TextRewriter, streamed_fields

_PLAN = PLANS["response"]
_REDACTOR = REDACTOR
_PIECES = ["jane.d", "oe@exa", "mple.com", "4111 11", "11 1111 1111", " ok ", "", "\\u0040"]


def _event(fdp: atheris.FuzzedDataProvider) -> bytes:
    text = fdp.PickValueInList(_PIECES) if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(6)
    shape = fdp.ConsumeIntInRange(0, 5)
    doc: object
    if shape == 0:
        doc = {"choices": [{"index": fdp.ConsumeIntInRange(0, 2), "delta": {"content": text}}]}
    elif shape == 1:
        call = {"index": fdp.ConsumeIntInRange(0, 1), "function": {"arguments": text}}
        doc = {"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}
    elif shape == 2:
        doc = {"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": text}
    elif shape == 3:
        doc = {"choices": [{"index": 0, "text": text}]}
    elif shape == 4:
        return b"data: " + text.encode("utf-8", "surrogatepass") + b"\n\n"
    else:
        return b": " + fdp.ConsumeBytes(4) + b"\n\n"
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


_WINDOW = 64


def _longest_value(make: type[SseRewriter | TextRewriter], wire: bytes) -> int:
    """The longest value in any one text the rewriter judges (a stream's concatenated fields)."""
    texts: dict[object, bytes] = {}
    if make is TextRewriter:
        texts[None] = wire
    else:
        separator = b"\n" if make is NdjsonRewriter else b"\n\n"
        for raw in wire.replace(b"\r\n", b"\n").split(separator):
            payload = raw if make is NdjsonRewriter else raw.removeprefix(b"data: ")
            try:
                doc = json.loads(payload)
            except (ValueError, RecursionError):
                continue
            for key, holder, field in streamed_fields(doc):
                texts[key] = texts.get(key, b"") + holder[field].encode("utf-8", "surrogatepass")
    return max((f.end - f.start for t in texts.values() for f in _PLAN.scanner.scan(t)), default=0)


def _run(make: type[SseRewriter | TextRewriter], wire: bytes, size: int) -> bytes:
    rewriter = make(_PLAN, _REDACTOR, Outcome(), window=_WINDOW)
    chunks = [wire[i : i + size] for i in range(0, len(wire), size)] or [b""]
    return b"".join(rewriter.feed(c) for c in chunks) + rewriter.finish()


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    make = fdp.PickValueInList([SseRewriter, TextRewriter, NdjsonRewriter])
    size = fdp.ConsumeIntInRange(1, 64)
    if fdp.ConsumeBool():
        wire = b"".join(_event(fdp) for _ in range(fdp.ConsumeIntInRange(0, 12)))
    else:
        wire = fdp.ConsumeBytes(fdp.remaining_bytes())
    if make is NdjsonRewriter:  # the same documents, one per line
        wire = wire.replace(b"data: ", b"").replace(b"\n\n", b"\n")
    whole = _run(make, wire, max(1, len(wire)))
    chunked = _run(make, wire, size)
    # a value longer than the window may be released in part before it is whole (documented)
    if _longest_value(make, wire) <= _WINDOW // 2:
        assert chunked == whole, (wire, size)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
