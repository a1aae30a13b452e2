"""Path normalization before any policy sees a path, the way Istio's ``normalize_path`` +
``merge_slashes`` + ``pathNormalization`` (Envoy) do it, and splitting of request targets.

- percent-encodings of unreserved characters (``A-Z a-z 0-9 - . _ ~``) are decoded, every
  other percent-encoding is kept with upper-case hex;
- encoded slashes and backslashes (``%2F``, ``%5C``, any case) are what a decoding server
  (uvicorn/Starlette, Flask, most model servers) turns into separators *after* the mesh has
  decided. By default (``encoded_slashes="reject"``, Istio's recommendation) they are refused
  with 400; with ``"decode"`` they become ``/`` before the steps below (Istio's
  ``DECODE_AND_MERGE_SLASHES``; a backslash counts as a slash, as Envoy normalizes it), so
  ``/a%2F..%2Fadmin`` is seen - and forwarded - as ``/admin``;
- an encoded NUL (``%00``) is refused (400): it truncates paths in C-based servers;
- ``.`` and ``..`` segments are removed (RFC 3986 §5.2.4; ``..`` never climbs above ``/``);
- runs of ``/`` are merged into one.

The result never contains a ``.``/``..`` segment, ``//``, nor any percent-encoding whose
decoding is a separator, so each segment authz sees is one segment of what a decoding server
routes; normalizing twice changes nothing. A malformed percent-encoding is the client's fault
(400).
"""

from __future__ import annotations

from typing import Literal

from meshward.http.errors import RemoteProtocolError

__all__ = ["EncodedSlashes", "normalize_path", "split_target"]

EncodedSlashes = Literal["reject", "decode"]

_HEX = frozenset("0123456789abcdefABCDEF")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _decode_unreserved(path: str, decode_slashes: bool) -> str:
    out: list[str] = []
    i = 0
    n = len(path)
    while True:
        j = path.find("%", i)
        if j < 0:
            out.append(path[i:])
            return "".join(out)
        out.append(path[i:j])
        hexpair = path[j + 1 : j + 3]
        if len(hexpair) != 2 or hexpair[0] not in _HEX or hexpair[1] not in _HEX:
            raise RemoteProtocolError(f"invalid percent-encoding in path at offset {j}")
        ch = chr(int(hexpair, 16))
        if ch in _UNRESERVED:
            out.append(ch)
        elif ch in "/\\":
            if not decode_slashes:
                raise RemoteProtocolError(f"encoded slash or backslash in path at offset {j}")
            out.append("/")
        elif ch == "\x00":
            raise RemoteProtocolError(f"encoded NUL in path at offset {j}")
        else:
            out.append("%" + hexpair.upper())
        i = j + 3
        if i >= n:
            return "".join(out)


def _remove_dot_segments(path: str) -> str:
    segments = path.split("/")[1:]  # path starts with "/", so the first element is ""
    stack: list[str] = []
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        if seg == ".":
            if i == last:
                stack.append("")
        elif seg == "..":
            if stack:
                stack.pop()
            if i == last:
                stack.append("")
        else:
            stack.append(seg)
    return "/" + "/".join(stack)


def _merge_slashes(path: str) -> str:
    while "//" in path:
        path = path.replace("//", "/")
    return path


def normalize_path(path: str, encoded_slashes: EncodedSlashes = "reject") -> str:
    """Normalize an origin-form path (without query); it must start with ``/``.

    ``encoded_slashes``: ``"reject"`` (default) refuses ``%2F``/``%5C`` with 400, ``"decode"``
    turns them into ``/`` before dot segments are removed and slashes merged."""
    if not path.startswith("/"):
        raise RemoteProtocolError("request path must start with '/'")
    # Fast path: nothing to decode, no dot segment, no duplicate slash (most requests).
    if "%" not in path and "/." not in path and "//" not in path:
        return path
    if "%" in path:
        path = _decode_unreserved(path, encoded_slashes == "decode")
    if "/." in path:
        path = _remove_dot_segments(path)
    return _merge_slashes(path)


def split_target(target: str) -> tuple[str | None, str, str]:
    """Split a request target into ``(authority, path, query)``.

    Origin form ``/p?q`` gives ``(None, "/p", "q")``; absolute form ``http://host:port/p?q``
    gives ``("host:port", "/p", "q")`` (an empty path becomes ``/``). Other schemes, userinfo
    and fragments are refused (400).
    """
    if "#" in target:
        raise RemoteProtocolError("request target must not contain a fragment")
    authority: str | None = None
    if not target.startswith("/"):
        lower = target[:7].lower()
        if lower != "http://":
            raise RemoteProtocolError("request target must be origin-form '/…' or absolute 'http://…'")
        rest = target[7:]
        cut = len(rest)
        for sep in "/?":
            k = rest.find(sep)
            if 0 <= k < cut:
                cut = k
        authority = rest[:cut]
        if not authority or "@" in authority:
            raise RemoteProtocolError("absolute request target needs a host and no userinfo")
        target = rest[cut:]
        if not target.startswith("/"):
            target = "/" + target
    q = target.find("?")
    if q < 0:
        return authority, target, ""
    return authority, target[:q], target[q + 1 :]
