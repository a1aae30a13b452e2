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

__all__ = ["field_lines"]


def field_lines(ex: Exchange, ctx: RequestContext, skip: Container[str], body: bytes | None) -> list[str]:
    """Header lines (``"name: value\\r\\n"``) for the forwarded request, framing included."""
    head = ex.head
    lines: list[str] = []
    for name, value in ctx.headers.items():
        if name in skip:
            continue
        if name == "expect" and (ex.continue_sent or body is not None):
            continue
        lines.append(f"{name}: {value}\r\n")
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
