"""Read a body the way the app will: what DLP scans must be what the app gets after decoding.

Pure helpers, no policy: which encoding a JSON document is in, whether a body *is* JSON
whatever its ``Content-Type`` says, which charset a text body declares, and how an
``application/x-www-form-urlencoded`` body splits into decoded fields.

- **JSON encodings**: RFC 8259 requires UTF-8, but Python's ``json.loads(bytes)`` (FastAPI,
  Starlette, Flask, the example models) reads UTF-16 and UTF-32 too, detected from a BOM or the
  pattern of NUL bytes in the first four (:func:`json_encoding`, the same rule). So the mesh
  decodes them the same way rather than refusing them: it sees exactly the strings such an app
  sees, and an app that does not decode them cannot read the document at all.
- **Sniffing**: a body whose first significant character opens a JSON object, array or string
  and that parses as JSON is JSON (:func:`sniff_json`), whatever the header claims - apps
  parse bodies sent without or with a wrong ``Content-Type`` anyway. Bare numbers and words
  are left to the text scan (a card number in ``text/plain`` stays a text finding).
"""

from __future__ import annotations

import codecs
import json
from typing import Any

__all__ = [
    "ASCII_COMPATIBLE",
    "declared_charset",
    "form_fields",
    "json_encoding",
    "json_start",
    "loads_json",
    "sniff_json",
]

# Charsets in which ASCII text (card numbers, e-mail addresses, keys) has its ASCII bytes.
ASCII_COMPATIBLE = frozenset(
    {"utf-8", "ascii", "latin-1", "iso8859-1", "cp1252", "iso8859-15", "cp1250", "cp1251"}
)


def json_encoding(body: bytes) -> str:
    """The encoding ``json.loads(body)`` will read ``body`` in (RFC 8259 / 4627 detection)."""
    return json.detect_encoding(body)


def loads_json(body: bytes, duplicates: list[Any] | None = None) -> Any:
    """Parse like ``json.loads(bytes)``; values a later duplicate key hid go to ``duplicates``.

    Raises ``ValueError`` (or ``RecursionError``) on a body that is not JSON."""
    if duplicates is None:
        return json.loads(body)

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                duplicates.append(out[key])
            out[key] = value
        return out

    return json.loads(body, object_pairs_hook=pairs)


def sniff_json(body: bytes) -> bool:
    """Whether ``body`` is a JSON object, array or string in any encoding ``json.loads`` reads."""
    try:
        encoding = json_encoding(body)
        head = body[:64].decode(encoding, "ignore").lstrip(" \t\r\n\ufeff")
    except (LookupError, ValueError):
        return False
    if not head or head[0] not in '{["':
        return False
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return False
    return True


def json_start(prefix: bytes) -> bool | None:
    """Whether a body beginning with ``prefix`` opens a JSON object or array (in any encoding
    ``json.loads`` reads); None while ``prefix`` is only whitespace (or too short to tell)."""
    if len(prefix) < 4 and not prefix.strip(b" \t\r\n"):
        return None
    try:
        head = prefix[:256].decode(json_encoding(prefix), "ignore").lstrip(" \t\r\n\ufeff")
    except LookupError:
        return False
    if not head:
        return None
    return head[0] in "{["


def declared_charset(content_type: str | None) -> str | None:
    """The Python codec name of a ``charset=`` parameter; ``"?"`` if unknown; None if absent."""
    if not content_type or ";" not in content_type:
        return None
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            value = value.strip().strip('"').strip()
            try:
                return codecs.lookup(value).name
            except LookupError:
                return "?"
    return None


def form_fields(body: bytes) -> list[tuple[int, int, bytes]]:
    """``(start, end, decoded)`` for every name and value of a urlencoded form, as servers read
    them (``+`` is a space, ``%XX`` a byte; a malformed escape stays as it is)."""
    out: list[tuple[int, int, bytes]] = []
    pos = 0
    size = len(body)
    while pos <= size:
        amp = body.find(b"&", pos)
        end = size if amp < 0 else amp
        eq = body.find(b"=", pos, end)
        parts = [(pos, end)] if eq < 0 else [(pos, eq), (eq + 1, end)]
        for start, stop in parts:
            if stop > start:
                out.append((start, stop, _unquote_plus(body[start:stop])))
        if amp < 0:
            break
        pos = amp + 1
    return out


_HEX = b"0123456789abcdefABCDEF"


def _unquote_plus(raw: bytes) -> bytes:
    raw = raw.replace(b"+", b" ")
    if b"%" not in raw:
        return raw
    out = bytearray()
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        if c == 0x25 and i + 2 < n and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(c)
            i += 1
    return bytes(out)
