"""The part of a forwarded request head that every side builds the same way.

After its request line (and, outbound, its ``host``), a forwarded head carries the request's
fields as the filters left them in ``ctx.headers`` (minus those not forwarded), a fresh body
framing (``content-length`` for a rewritten or known body, ``transfer-encoding: chunked``
otherwise) and the request id. Inbound (to the app) and egress (to an external service) then
add their own fields.
"""

from __future__ import annotations

from collections.abc import Container
from typing import TYPE_CHECKING

from meshward.filters.base import RequestContext

if TYPE_CHECKING:
    from meshward.proxy.exchange import Exchange

__all__ = ["field_lines", "framing"]


def field_lines(ex: Exchange, ctx: RequestContext, skip: Container[str], body: bytes | None) -> list[str]:
    """Header lines (``"name: value\\r\\n"``) for the forwarded request, framing included."""
    head = ex.head
    # an Expect the sidecar already answered (or a body it replaced) does not travel on
    no_expect = ex.continue_sent or body is not None
    lines = [
        f"{name}: {value}\r\n"
        for name, value in ctx.headers.items()
        if name not in skip and not (no_expect and name == "expect")
    ]
    if body is not None:
        lines.append(f"content-length: {len(body)}\r\n")
    elif head.chunked:
        lines.append("transfer-encoding: chunked\r\n")
        ex.up_chunked = True
    elif head.content_length is not None:
        lines.append(f"content-length: {head.content_length}\r\n")
    if "x-request-id" not in ctx.headers:
        lines.append(f"x-request-id: {ex.request_id}\r\n")
    return lines


def framing(ex: Exchange, body: bytes | None) -> bytes:
    """The framing field and the blank line that end a forwarded head built as bytes (outbound):
    ``content-length`` of ``body`` when the request side read (or replaced) it, else the
    client's own framing (chunked: the body is re-chunked as it streams)."""
    if body is not None:
        ex.up_chunked = False
        return b"content-length: %d\r\n\r\n" % len(body)
    head = ex.head
    if head.chunked:
        ex.up_chunked = True
        return b"transfer-encoding: chunked\r\n\r\n"
    if head.content_length is not None:
        return b"content-length: %d\r\n\r\n" % head.content_length
    return b"\r\n"
