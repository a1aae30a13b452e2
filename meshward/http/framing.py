"""Sans-IO serialization: request and response heads, chunked framing, hop-by-hop headers.

The proxy re-frames every body it forwards (it never copies Transfer-Encoding or chunk
extensions across a hop), so what the next hop parses is exactly what we validated.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "CHUNK_END",
    "HOP_BY_HOP",
    "STATUS_REASONS",
    "chunk",
    "clean_fields",
    "connection_tokens",
    "response_head",
]

CHUNK_END = b"0\r\n\r\n"

# Headers that describe one hop (RFC 9110 §7.6.1) and never travel across the proxy as they are.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

STATUS_REASONS = {
    100: b"Continue",
    101: b"Switching Protocols",
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    417: b"Expectation Failed",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (empty data yields nothing: an empty chunk would end it)."""
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


_NO_TOKENS: frozenset[bytes] = frozenset()


_TOKENS_SEEN: dict[bytes, frozenset[bytes]] = {}  # "keep-alive", "close", ...: a handful in practice


def connection_tokens(value: bytes | None) -> frozenset[bytes]:
    """Lower-case tokens of a Connection header value (names it declares hop-by-hop too)."""
    if not value:
        return _NO_TOKENS
    tokens = _TOKENS_SEEN.get(value)
    if tokens is None:
        tokens = frozenset(t.strip().lower() for t in value.split(b","))
        if len(_TOKENS_SEEN) < 64:  # peers choose these values: keep the cache bounded
            _TOKENS_SEEN[value] = tokens
    return tokens


def clean_fields(fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Drop fields a filter may have set with CR, LF or NUL in them (they would split the head).

    Cheap when all is well: one scan per field; callers use it only on filter-supplied fields.
    """
    return [(n, v) for n, v in fields if not (_bad(n) or _bad(v))]


def _bad(text: bytes) -> bool:
    return b"\r" in text or b"\n" in text or b"\x00" in text


def response_head(
    status: int, reason: bytes | None, headers: Iterable[tuple[bytes, bytes]], version: bytes = b"1.1"
) -> bytes:
    if reason is None:
        reason = STATUS_REASONS.get(status, b"Unknown")
    parts = [b"HTTP/%s %d %s" % (version, status, reason)]
    parts += [n + b": " + v for n, v in headers]
    parts.append(b"\r\n")
    return b"\r\n".join(parts)
