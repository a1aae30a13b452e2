"""Fuzz target: the HTTP/1.1 request parser and what runs on its heads (target split, path
normalization, header hygiene); the property checked: only RemoteProtocolError is ever raised,
events are well-formed, and feeding the bytes in pieces gives the same result as in one go."""

from __future__ import annotations

import itertools
import sys

import atheris

with atheris.instrument_imports():
    from fuzz.http_events import fold
    from meshward.http.errors import RemoteProtocolError
    from meshward.http.hygiene import clean_request_headers
    from meshward.http.normalize import normalize_path, split_target
    from meshward.http.parser import RequestHead, RequestParser


def _parse(pieces: list[bytes]) -> tuple[list[tuple[object, ...]], str | None]:
    """The events of ``pieces`` fed in order (heads and body bytes), and the error if any."""
    parser = RequestParser(max_header_bytes=65536, max_headers=100, max_body_bytes=1 << 20)
    out: list[tuple[object, ...]] = []
    body = b""
    try:
        for piece in pieces:
            for ev in parser.feed(piece):
                if isinstance(ev, RequestHead):
                    out.append(
                        ("head", ev.method, ev.target, tuple(ev.headers), ev.content_length, ev.chunked)
                    )
                    _check_head(ev)
                else:
                    body, stop = fold(ev, out, body)
                    if stop:
                        return out, None
    except RemoteProtocolError as exc:
        assert 400 <= exc.status < 600, exc.status
        return out, type(exc).__name__
    return out, None


def _check_head(head: RequestHead) -> None:
    assert head.version in ("1.0", "1.1")
    assert not (head.chunked and head.content_length is not None)
    if head.target == "*":
        return
    try:
        _, path, _ = split_target(head.target)
        for mode in ("reject", "decode"):
            once = normalize_path(path, mode)
            assert normalize_path(once, mode) == once
        clean_request_headers(head.headers, head.connection)
    except RemoteProtocolError as exc:
        assert exc.status == 400


_METHODS = [b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS", b"CONNECT", b"DELETE", b"get", b"P\x00ST"]
_NAMES = [
    b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Upgrade", b"Content-Type",
    b"Expect", b"X-Request-Id", b"X_Forwarded_Client_Cert", b"Forwarded", b"content-type", b"X-A",
    b"Keep-Alive", b"TE", b"Trailer", b"Host ", b"Con\x00tent-Length",
]  # fmt: skip


def _structured(fdp: atheris.FuzzedDataProvider) -> bytes:
    """A request that mostly looks like one, so the parser gets past the request line."""
    method = fdp.PickValueInList(_METHODS)
    target = b"/" + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
    version = fdp.PickValueInList([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 "])
    lines = [method + b" " + target + b" " + version]
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        lines.append(fdp.PickValueInList(_NAMES) + b": " + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 24)))
    return b"\r\n".join(lines) + b"\r\n\r\n" + fdp.ConsumeBytes(fdp.remaining_bytes())


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    cuts = sorted({fdp.ConsumeIntInRange(0, 4096) for _ in range(fdp.ConsumeIntInRange(0, 4))})
    wire = _structured(fdp) if fdp.ConsumeBool() else fdp.ConsumeBytes(fdp.remaining_bytes())
    whole = _parse([wire])
    bounds = [0, *[c for c in cuts if c < len(wire)], len(wire)]
    pieces = [wire[a:b] for a, b in itertools.pairwise(bounds)]
    split = _parse(pieces)
    if whole[1] is None and split[1] is None:
        assert whole[0] == split[0], (whole, split)
    elif whole[1] is not None and split[1] is not None:
        # both refused: a feed that fails drops the events parsed earlier in that same feed
        # (the connection answers 400 and closes), so one side's heads are a prefix of the other's
        a = [e for e in whole[0] if e[0] == "head"]
        b = [e for e in split[0] if e[0] == "head"]
        shorter, longer = (a, b) if len(a) <= len(b) else (b, a)
        assert longer[: len(shorter)] == shorter, (whole, split)
    else:
        # one of them refused: only a message the other one never completed may differ
        done = whole[0] if whole[1] is None else split[0]
        refused = split[0] if whole[1] is None else whole[0]
        assert refused == done[: len(refused)], (whole, split)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
