"""What the HTTP parser fuzz targets share: folding body events into a comparable record."""

from __future__ import annotations

from meshward.http.parser import Data, EndOfMessage, Event, Upgrade

__all__ = ["fold"]


def fold(ev: Event, out: list[tuple[object, ...]], body: bytes) -> tuple[bytes, bool]:
    """Add a body event to ``out`` (a message's body as one ``("end", body)`` entry); returns
    the body pending so far and whether parsing stops here (an Upgrade)."""
    if isinstance(ev, Data):
        return body + ev.data, False
    if isinstance(ev, EndOfMessage):
        out.append(("end", body))
        return b"", False
    if isinstance(ev, Upgrade):
        out.append(("upgrade",))
        return body, True
    return body, False
