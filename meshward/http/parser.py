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
from meshward.http.events import Data, EndOfMessage, Event, Headers, RequestHead, ResponseHead, Upgrade

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

_END = EndOfMessage()


class _Stop(Exception):
    """Raised inside an httptools callback to stop parsing; the real error is kept aside."""


# Lengths of the header names the parser looks at (a cheap test before lower-casing).
_NAME_LENGTHS = frozenset((4, 6, 10, 12, 14, 17))


class _Scan:
    """What one pass over a head's fields found (framing, host, expect, connection, id)."""

    __slots__ = ("connection", "content_length", "expect", "host", "request_id", "te")

    def __init__(self, headers: Headers, request: bool) -> None:
        self.content_length: int | None = None
        self.te: bytes | None = None
        self.host: bytes | None = None
        self.expect: bytes | None = None
        self.connection: bytes | None = None
        self.request_id: bytes | None = None
        for name, value in headers:
            if len(name) not in _NAME_LENGTHS:
                continue
            low = name.lower()
            if low == b"content-length":
                self.content_length = int(value)  # llhttp checked: digits only, not repeated
            elif low == b"transfer-encoding":
                if self.te is not None:
                    raise RemoteProtocolError("repeated Transfer-Encoding header")
                self.te = value
            elif low == b"connection":
                self.connection = value if self.connection is None else self.connection + b"," + value
            elif not request:
                continue
            elif low == b"host":
                if self.host is not None:
                    raise RemoteProtocolError("repeated Host header")
                self.host = value
            elif low == b"expect":
                self.expect = value
            elif low == b"x-request-id":
                self.request_id = value

    def chunked(self, version: str) -> bool:
        """Refuse any Transfer-Encoding but exactly ``chunked`` (and any at all in HTTP/1.0)."""
        te = self.te
        if te is None:
            return False
        if version != "1.1":
            raise RemoteProtocolError("Transfer-Encoding is not allowed in HTTP/1.0")
        if te.strip().lower() != b"chunked":
            raise RemoteProtocolError("only 'Transfer-Encoding: chunked' is accepted")
        return True


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
        self._began_in_feed = False  # the current message began in the feed being parsed
        self._head_fed = 0  # bytes of earlier feeds that ended inside the current head
        self._feed_size = 0

    # httptools callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = []
        self._head_size = 0
        self._head_fed = 0
        self._in_head = True
        self._mid_message = True
        self._began_in_feed = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))  # after the head: a trailer, into a throwaway list

    def _end_head(self, what: str) -> Headers:
        """The head is complete: check its limits, hand its fields over, drop any trailers."""
        self._in_head = False
        headers = self._headers
        self._headers = []
        if len(headers) > self.max_headers:
            raise HeaderTooLarge(f"more than {self.max_headers} header fields")
        # Exact size only when the head may be too large (it spans feeds or a big feed).
        if not self._began_in_feed or self._feed_size > self.max_header_bytes:
            size = self._head_size + sum(len(n) + len(v) + 4 for n, v in headers)
            if size > self.max_header_bytes:
                raise HeaderTooLarge(f"{what} head larger than {self.max_header_bytes} bytes")
        return headers

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
        # Test a local, not ``self._error``: a callback may set it during ``feed_data``, and a
        # narrowed attribute would be typed None after it (a TypeError once compiled by mypyc).
        error = self._error
        if error is not None:
            raise error
        events: list[Event] = []
        self._events = events
        self._began_in_feed = False
        self._feed_size = len(data)
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
        if self._in_head and self._mid_message:
            # A head still incomplete: count what it took so far (this feed counts from the
            # next one on, as the part before the head's start belonged to the last message).
            fed = self._head_fed + (0 if self._began_in_feed else len(data))
            pending = self._head_size + sum(len(n) + len(v) + 4 for n, v in self._headers)
            if max(fed, pending) > self.max_header_bytes:
                self._error = HeaderTooLarge(f"head larger than {self.max_header_bytes} bytes")
                raise self._error
            self._head_fed = fed
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
        headers = self._end_head("request")
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
        scan = _Scan(headers, request=True)
        chunked = scan.chunked(version)
        content_length = None if chunked else scan.content_length
        expect = scan.expect
        if expect is not None and expect.strip().lower() != b"100-continue":
            raise RemoteProtocolError("unsupported expectation", 417)
        if scan.host is None and version == "1.1":
            raise RemoteProtocolError("HTTP/1.1 request without a Host header")
        limit = self.max_body_bytes
        if limit is not None and content_length is not None and content_length > limit:
            raise BodyTooLarge(f"request body larger than {limit} bytes")
        return RequestHead(
            method,
            target,
            version,
            headers,
            p.should_keep_alive(),
            content_length,
            chunked,
            p.should_upgrade() or method == "CONNECT",
            expect is not None,
            scan.host.decode("latin-1") if scan.host is not None else None,
            scan.connection,
            scan.request_id,
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
        p = self._parser
        try:
            headers = self._end_head("response")
            version: str = p.get_http_version()
            if version not in ("1.1", "1.0"):
                raise RemoteProtocolError(f"upstream answered HTTP/{version}", 502)
            scan = _Scan(headers, request=False)
            chunked = scan.chunked(version)
        except RemoteProtocolError as exc:
            self._fail(RemoteProtocolError(exc.message, 502))
            return
        content_length = None if chunked else scan.content_length
        status: int = p.get_status_code()
        keep_alive: bool = p.should_keep_alive()
        head = ResponseHead(
            status, self._reason, version, headers, keep_alive, content_length, chunked, scan.connection
        )
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
