"""Sans-IO, strict HTTP/1.1 parsing on httptools (llhttp): bytes in, events out, no sockets.

:class:`RequestParser` turns what a client sends into :class:`RequestHead`, :class:`Data`,
:class:`EndOfMessage` and (after an Upgrade or CONNECT head) :class:`Upgrade` events.
llhttp already refuses most malformed input (CL+TE, duplicate or invalid Content-Length, bad
chunk sizes, obs-fold, bare CR/LF, invalid methods and targets); on top of it this module
refuses what could still be smuggled or misread by the next hop:

- a ``Transfer-Encoding`` other than exactly ``chunked``, or any in HTTP/1.0;
- HTTP versions other than 1.0 and 1.1; a missing or repeated ``Host`` in HTTP/1.1;
- targets with a fragment or a backslash; ``*`` except with OPTIONS;
- heads larger than ``max_header_bytes`` or with more than ``max_headers`` fields (431);
- bodies larger than ``max_body_bytes`` (413), by Content-Length up front or while streaming.

:class:`ResponseParser` does the same for what an upstream answers. Chunked bodies arrive
de-chunked in :class:`Data`; whoever forwards them frames them again. Trailers are dropped.
"""

from __future__ import annotations

from typing import Any

import httptools

from meshward.http.errors import BodyTooLarge, HeaderTooLarge, RemoteProtocolError

__all__ = [
    "Data",
    "EndOfMessage",
    "Event",
    "RequestHead",
    "RequestParser",
    "ResponseHead",
    "ResponseParser",
    "Upgrade",
]

Headers = list[tuple[bytes, bytes]]


class RequestHead:
    """A validated request head. ``headers`` keep their original order and spelling."""

    __slots__ = (
        "chunked",
        "content_length",
        "expect_continue",
        "headers",
        "host",
        "keep_alive",
        "method",
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

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def __repr__(self) -> str:
        return f"RequestHead({self.method} {self.target} HTTP/{self.version}, {len(self.headers)} headers)"


class ResponseHead:
    """A response head; ``status`` < 200 is informational (another head follows)."""

    __slots__ = ("chunked", "content_length", "headers", "keep_alive", "reason", "status", "version")

    def __init__(
        self,
        status: int,
        reason: bytes,
        version: str,
        headers: Headers,
        keep_alive: bool,
        content_length: int | None,
        chunked: bool,
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked

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
_END = EndOfMessage()


class _Stop(Exception):
    """Raised inside an httptools callback to stop parsing; the real error is kept aside."""


def _framing(headers: Headers, version: str) -> tuple[int | None, bool]:
    """Content-Length and chunked-ness from the (llhttp-checked) headers, refusing odd TE."""
    content_length: int | None = None
    te: bytes | None = None
    for name, value in headers:
        if len(name) == 14 and name.lower() == b"content-length":
            content_length = int(value)  # llhttp checked: digits only, not repeated
        elif len(name) == 17 and name.lower() == b"transfer-encoding":
            if te is not None:
                raise RemoteProtocolError("repeated Transfer-Encoding header")
            te = value
    if te is None:
        return content_length, False
    if version != "1.1":
        raise RemoteProtocolError("Transfer-Encoding is not allowed in HTTP/1.0")
    if te.strip().lower() != b"chunked":
        raise RemoteProtocolError("only 'Transfer-Encoding: chunked' is accepted")
    return None, True


class _Base:
    """What both parsers share: header collection, size limits and error capture."""

    def __init__(self, max_header_bytes: int, max_headers: int) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self._events: list[Event] = []
        self._headers: Headers = []
        self._head_size = 0
        self._in_head = True
        self._error: RemoteProtocolError | None = None
        self._upgraded = False
        self._quiet_stop = False  # a callback stopped parsing on purpose (not an error)
        self._mid_message = False

    # httptools callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = []
        self._head_size = 0
        self._in_head = True
        self._mid_message = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a trailer: dropped
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + 4
        if len(self._headers) > self.max_headers:
            self._fail(HeaderTooLarge(f"more than {self.max_headers} header fields"))

    def on_body(self, body: bytes) -> None:
        self._events.append(Data(body))

    def on_message_complete(self) -> None:
        self._mid_message = False
        self._events.append(_END)

    # ----------------------------------------------------------------------------------------
    def _fail(self, error: RemoteProtocolError) -> None:
        self._error = error
        raise _Stop

    def _run(self, parser: Any, data: bytes) -> list[Event]:
        if self._error is not None:
            raise self._error
        events: list[Event] = []
        self._events = events
        head_before = self._in_head
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded = True
            offset = exc.args[0] if exc.args else len(data)
            events.append(Upgrade(data[offset:]))
        except httptools.HttpParserError as exc:
            if self._quiet_stop:
                self._quiet_stop = False
                return events
            if self._error is None:
                self._error = RemoteProtocolError(f"malformed HTTP: {exc}")
            raise self._error from None
        if head_before and self._in_head:
            self._head_size += len(data)
            if self._head_size > self.max_header_bytes:
                self._error = HeaderTooLarge(f"request head larger than {self.max_header_bytes} bytes")
                raise self._error
        return events


class RequestParser(_Base):
    """Parse one client connection's requests (keep-alive and pipelining included)."""

    def __init__(
        self, max_header_bytes: int = 65536, max_headers: int = 100, max_body_bytes: int | None = None
    ) -> None:
        super().__init__(max_header_bytes, max_headers)
        self.max_body_bytes = max_body_bytes
        self._body_size = 0
        self._target = b""
        self._parser = httptools.HttpRequestParser(self)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._target = b""
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._target += url
        self._head_size += len(url)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self.max_body_bytes is not None and self._body_size > self.max_body_bytes:
            self._fail(BodyTooLarge(f"request body larger than {self.max_body_bytes} bytes"))
        self._events.append(Data(body))

    def on_headers_complete(self) -> None:
        self._in_head = False
        try:
            self._events.append(self._head())
        except RemoteProtocolError as exc:
            self._fail(exc)

    def _head(self) -> RequestHead:
        p = self._parser
        if self._head_size > self.max_header_bytes:
            raise HeaderTooLarge(f"request head larger than {self.max_header_bytes} bytes")
        version: str = p.get_http_version()
        if version not in ("1.1", "1.0"):
            raise RemoteProtocolError(
                f"HTTP version {version} is not supported", 505 if version >= "2" else 400
            )
        method: str = p.get_method().decode("ascii")
        target = self._target.decode("ascii")  # llhttp refuses non-ASCII targets
        if "\\" in target or "#" in target:
            raise RemoteProtocolError("backslash or fragment in request target")
        if target == "*" and method != "OPTIONS":
            raise RemoteProtocolError("'*' target is only valid with OPTIONS")
        headers = self._headers
        content_length, chunked = _framing(headers, version)
        host: str | None = None
        expect = False
        for name, value in headers:
            n = len(name)
            if n == 4 and name.lower() == b"host":
                if host is not None:
                    raise RemoteProtocolError("repeated Host header")
                host = value.decode("latin-1")
            elif n == 6 and name.lower() == b"expect":
                if value.strip().lower() != b"100-continue":
                    raise RemoteProtocolError("unsupported expectation", 417)
                expect = True
        if host is None and version == "1.1":
            raise RemoteProtocolError("HTTP/1.1 request without a Host header")
        if (
            self.max_body_bytes is not None
            and content_length is not None
            and content_length > self.max_body_bytes
        ):
            raise BodyTooLarge(f"request body larger than {self.max_body_bytes} bytes")
        return RequestHead(
            method,
            target,
            version,
            headers,
            p.should_keep_alive(),
            content_length,
            chunked,
            p.should_upgrade() or method == "CONNECT",
            expect,
            host,
        )

    def feed(self, data: bytes) -> list[Event]:
        """Parse ``data``; raise :class:`RemoteProtocolError` (with a status) on bad input."""
        if self._upgraded:
            raise RemoteProtocolError("connection already upgraded; raw bytes are not HTTP")
        return self._run(self._parser, data)


class ResponseParser(_Base):
    """Parse one upstream connection's responses; call :meth:`expect` before each request."""

    def __init__(self, max_header_bytes: int = 65536, max_headers: int = 100) -> None:
        super().__init__(max_header_bytes, max_headers)
        self._parser = httptools.HttpResponseParser(self)
        self._no_body = False
        self._open_ended = False  # body delimited by the connection closing
        self._reason = b""

    def expect(self, head_request: bool) -> None:
        """Announce the next response; a response to HEAD has no body whatever it says."""
        self._no_body = head_request

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reason = b""

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_headers_complete(self) -> None:
        self._in_head = False
        p = self._parser
        try:
            version: str = p.get_http_version()
            if version not in ("1.1", "1.0"):
                raise RemoteProtocolError(f"upstream answered HTTP/{version}", 502)
            content_length, chunked = _framing(self._headers, version)
        except RemoteProtocolError as exc:
            self._fail(RemoteProtocolError(exc.message, 502))
            return
        status: int = p.get_status_code()
        keep_alive: bool = p.should_keep_alive()
        head = ResponseHead(status, self._reason, version, self._headers, keep_alive, content_length, chunked)
        self._events.append(head)
        if self._no_body and status >= 200:
            # llhttp cannot be told about HEAD: end the message here and start a fresh parser
            # for the next response (upstream requests are never pipelined).
            self._events.append(_END)
            self._parser = httptools.HttpResponseParser(self)
            self._no_body = False
            self._mid_message = False
            self._quiet_stop = True
            raise _Stop
        elif status >= 200 and status not in (204, 304) and content_length is None and not chunked:
            self._open_ended = True
            head.keep_alive = False

    def on_message_complete(self) -> None:
        self._open_ended = False
        super().on_message_complete()

    def feed(self, data: bytes) -> list[Event]:
        if self._upgraded:
            raise RemoteProtocolError("upstream connection already upgraded", 502)
        return self._run(self._parser, data)

    def eof(self) -> list[Event]:
        """The upstream closed: ends a close-delimited body, else it is a truncated response."""
        if self._open_ended:
            self._open_ended = False
            return [_END]
        if not self._mid_message:
            return []
        raise RemoteProtocolError("upstream closed the connection in the middle of a response", 502)
