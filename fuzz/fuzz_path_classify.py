"""Fuzz target: path normalization + AI classification; the property checked: what authz sees
equals what a decoding server routes - each normalized segment decodes to exactly one segment
of the decoded path (no encoded separator survives; ``%2F``/``%5C`` are refused by default),
no dot segments or ``//`` remain, normalizing is stable in both modes, and classification of
the normalized path never raises and does not change when normalized again."""

from __future__ import annotations

import sys
from urllib.parse import unquote

import atheris

with atheris.instrument_imports():
    from meshward.ai.protocol import classify
    from meshward.http.errors import RemoteProtocolError
    from meshward.http.normalize import EncodedSlashes, normalize_path, split_target

_PIECES = [
    "/",
    "%2F",
    "%2f",
    "%5C",
    "%2E",
    "%2e",
    ".",
    "..",
    "%25",
    "v1",
    "v2",
    "models",
    "repository",
    "%00",
    ";",
]


def _target(fdp: atheris.FuzzedDataProvider) -> str:
    if fdp.ConsumeBool():
        return fdp.ConsumeBytes(fdp.remaining_bytes()).decode("latin-1")
    parts = [fdp.PickValueInList(_PIECES) for _ in range(fdp.ConsumeIntInRange(0, 16))]
    return "/" + "".join(parts) + fdp.ConsumeBytes(fdp.remaining_bytes()).decode("latin-1")


def _check(path: str, mode: EncodedSlashes) -> str | None:
    try:
        seen = normalize_path(path, mode)
    except RemoteProtocolError as exc:
        assert exc.status == 400
        if mode == "decode":
            return None
        lowered = path.lower()
        assert "%" in lowered, path  # refused only for something encoded (or not starting "/")
        return None
    assert seen.startswith("/") and "//" not in seen, (path, seen)
    segments = seen.split("/")
    assert "." not in segments and ".." not in segments, (path, seen)
    upper = seen.upper()
    assert "%2F" not in upper and "%5C" not in upper and "%00" not in upper, (path, seen)
    decoded = unquote(seen, errors="surrogateescape")
    assert [unquote(s, errors="surrogateescape") for s in segments] == decoded.split("/"), (path, seen)
    assert "\\" not in decoded or "\\" in path, (path, seen)
    assert normalize_path(seen, mode) == seen, (path, seen)
    if mode == "reject":
        lowered = path.lower()
        assert "%2f" not in lowered and "%5c" not in lowered, path
    return seen


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    method = fdp.PickValueInList(["GET", "POST", "DELETE", "post"])
    target = _target(fdp)
    try:
        _, path, _ = split_target(target)
    except RemoteProtocolError:
        return
    if "\\" in path:  # the request parser refuses a raw backslash before any of this runs
        return
    rejected = _check(path, "reject")
    decoded = _check(path, "decode")
    if rejected is not None:
        assert decoded == rejected, (path, rejected, decoded)  # nothing encoded to decode: same
    for seen in (rejected, decoded):
        if seen is None:
            continue
        first = classify(method, seen, {}, None)
        assert classify(method, normalize_path(seen), {}, None) == first


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
