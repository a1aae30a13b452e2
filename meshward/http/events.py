"""The events of the sans-IO HTTP layer: what a parser hands to whoever drives it.

A request is one :class:`RequestHead`, zero or more :class:`Data`, one :class:`EndOfMessage`;
after an Upgrade or CONNECT head (or a 101 answer) an :class:`Upgrade` carries the first raw
bytes that follow. Heads keep their fields in order and spelling, plus what the parser already
extracted from them (framing, host, expectation, Connection, request id).
"""

from __future__ import annotations

__all__ = ["Data", "EndOfMessage", "Event", "Headers", "RequestHead", "ResponseHead", "Upgrade"]

Headers = list[tuple[bytes, bytes]]


class RequestHead:
    """A validated request head. ``headers`` keep their original order and spelling."""

    __slots__ = (
        "chunked",
        "connection",
        "content_length",
        "expect_continue",
        "headers",
        "host",
        "keep_alive",
        "method",
        "request_id",
        "target",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: str,
        version: str,
        headers: Headers,
        keep_alive: bool,
        content_length: int | None,
        chunked: bool,
        upgrade: bool,
        expect_continue: bool,
        host: str | None,
        connection: bytes | None = None,
        request_id: bytes | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.upgrade = upgrade
        self.expect_continue = expect_continue
        self.host = host
        self.connection = connection  # the Connection header(s), joined; None if absent
        self.request_id = request_id  # the caller's X-Request-Id, if any

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def __repr__(self) -> str:
        return f"RequestHead({self.method} {self.target} HTTP/{self.version}, {len(self.headers)} headers)"


class ResponseHead:
    """A response head; ``status`` < 200 is informational (another head follows)."""

    __slots__ = (
        "chunked",
        "connection",
        "content_length",
        "headers",
        "keep_alive",
        "reason",
        "status",
        "version",
    )

    def __init__(
        self,
        status: int,
        reason: bytes,
        version: str,
        headers: Headers,
        keep_alive: bool,
        content_length: int | None,
        chunked: bool,
        connection: bytes | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.connection = connection

    def __repr__(self) -> str:
        return f"ResponseHead({self.status}, {len(self.headers)} headers)"


class Data:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"Data({self.data!r})"


class EndOfMessage:
    __slots__ = ()

    def __repr__(self) -> str:
        return "EndOfMessage()"


class Upgrade:
    """The connection left HTTP (101 / CONNECT): ``rest`` are the first raw bytes after the head."""

    __slots__ = ("rest",)

    def __init__(self, rest: bytes) -> None:
        self.rest = rest

    def __repr__(self) -> str:
        return f"Upgrade({self.rest!r})"


Event = RequestHead | ResponseHead | Data | EndOfMessage | Upgrade
