"""Fuzz target: the HTTP/1.1 response parser (an upstream's answers, HEAD included, then EOF);
the property checked: only RemoteProtocolError (as a 502) is ever raised, informational heads
come before a final one, and feeding the bytes in pieces gives the same result as in one go."""

from __future__ import annotations

import itertools
import sys

import atheris

with atheris.instrument_imports():
    from fuzz.http_events import fold
    from meshward.http.errors import RemoteProtocolError
    from meshward.http.parser import ResponseHead, ResponseParser

_STATUS = [
    b"200 OK",
    b"101 Switching Protocols",
    b"100 Continue",
    b"204 No Content",
    b"304 NM",
    b"502 X",
    b"99 x",
]
_NAMES = [
    b"Content-Length", b"Transfer-Encoding", b"Connection", b"Upgrade", b"Content-Type", b"Trailer",
    b"Keep-Alive", b"content-length", b"Transfer-Encoding ",
]  # fmt: skip


def _structured(fdp: atheris.FuzzedDataProvider) -> bytes:
    version = fdp.PickValueInList([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2"])
    lines = [version + b" " + fdp.PickValueInList(_STATUS)]
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        lines.append(fdp.PickValueInList(_NAMES) + b": " + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 16)))
    return b"\r\n".join(lines) + b"\r\n\r\n" + fdp.ConsumeBytes(fdp.remaining_bytes())


def _parse(pieces: list[bytes], head_request: bool) -> tuple[list[tuple[object, ...]], int | None]:
    parser = ResponseParser()
    parser.expect(head_request)
    out: list[tuple[object, ...]] = []
    body = b""
    try:
        for piece in [*pieces, None]:
            events = parser.eof() if piece is None else parser.feed(piece)
            for ev in events:
                if isinstance(ev, ResponseHead):
                    assert 100 <= ev.status <= 999, ev.status
                    out.append(("head", ev.status, tuple(ev.headers), ev.content_length, ev.chunked))
                    if ev.status >= 200:
                        parser.expect(head_request)
                else:
                    body, stop = fold(ev, out, body)
                    if stop:
                        return out, None
    except RemoteProtocolError as exc:
        assert exc.status in (400, 431, 502, 505), exc.status
        return out, exc.status
    return out, None


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    head_request = fdp.ConsumeBool()
    cuts = sorted({fdp.ConsumeIntInRange(0, 4096) for _ in range(fdp.ConsumeIntInRange(0, 4))})
    wire = _structured(fdp) if fdp.ConsumeBool() else fdp.ConsumeBytes(fdp.remaining_bytes())
    whole = _parse([wire], head_request)
    bounds = [0, *[c for c in cuts if c < len(wire)], len(wire)]
    split = _parse([wire[a:b] for a, b in itertools.pairwise(bounds)], head_request)
    heads = [e for e in whole[0] if e[0] == "head"]
    assert heads == [e for e in split[0] if e[0] == "head"][: len(heads)] or whole[1] != split[1]
    if whole[1] is None and split[1] is None:
        assert whole == split, (whole, split)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
