"""The strict sans-IO parser: transcripts of bytes in, events (or a refusal with its status) out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshward.http import (
    Data,
    EndOfMessage,
    RemoteProtocolError,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
    Upgrade,
)

H = b"Host: chat.llm\r\n"

# Every request here could be read differently by two HTTP implementations (or is plainly
# invalid): the sidecar must refuse it before anything is forwarded.
SMUGGLING = {
    "cl_and_te": b"POST / HTTP/1.1\r\n"
    + H
    + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_and_cl": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    "duplicate_cl_differs": b"POST / HTTP/1.1\r\n"
    + H
    + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "duplicate_cl_same": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "cl_list": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3, 3\r\n\r\nabc",
    "cl_plus_sign": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +3\r\n\r\nabc",
    "cl_negative": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n",
    "cl_hex": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x3\r\n\r\nabc",
    "te_gzip_chunked": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te_identity": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n",
    "te_twice": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_in_http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_space_before_colon": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "bad_chunk_size": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk_size_overflow": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    "chunk_bare_lf": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
    "chunk_negative": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
    "obs_fold": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n",
    "obs_fold_tab": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n\tb\r\n\r\n",
    "bare_lf_line": b"GET / HTTP/1.1\n" + H + b"\r\n",
    "bare_lf_header": b"GET / HTTP/1.1\r\nHost: chat.llm\nX-A: 1\r\n\r\n",
    "bare_cr_header": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n",
    "nul_in_header": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    "ctl_in_header": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n",
    "header_no_colon": b"GET / HTTP/1.1\r\n" + H + b"bogus\r\n\r\n",
    "space_in_name": b"GET / HTTP/1.1\r\n" + H + b"X A: 1\r\n\r\n",
    "invalid_method": b"G@T / HTTP/1.1\r\n" + H + b"\r\n",
    "lowercase_method": b"get / HTTP/1.1\r\n" + H + b"\r\n",
    "space_in_target": b"GET /a b HTTP/1.1\r\n" + H + b"\r\n",
    "non_ascii_target": b"GET /\xc3\xa9 HTTP/1.1\r\n" + H + b"\r\n",
    "fragment_in_target": b"GET /a#frag HTTP/1.1\r\n" + H + b"\r\n",
    "backslash_in_target": b"GET /a\\..\\b HTTP/1.1\r\n" + H + b"\r\n",
    "star_with_get": b"GET * HTTP/1.1\r\n" + H + b"\r\n",
    "http09": b"GET /\r\n\r\n",
    "http2_preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "http12": b"GET / HTTP/1.2\r\n" + H + b"\r\n",
    "no_host": b"GET / HTTP/1.1\r\n\r\n",
    "two_hosts": b"GET / HTTP/1.1\r\n" + H + H + b"\r\n",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_refused_with_400_and_no_head_event(name: str) -> None:
    parser = RequestParser()
    with pytest.raises(RemoteProtocolError) as info:
        parser.feed(SMUGGLING[name])
    assert info.value.status in (400, 505)
    # Once refused, the parser stays refused (nothing after it may be read as a request).
    with pytest.raises(RemoteProtocolError):
        parser.feed(b"GET / HTTP/1.1\r\n" + H + b"\r\n")


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_refused_even_when_fed_byte_by_byte(name: str) -> None:
    parser = RequestParser()
    with pytest.raises(RemoteProtocolError):
        for i in range(len(SMUGGLING[name])):
            parser.feed(SMUGGLING[name][i : i + 1])


def test_keep_alive_and_pipelining_transcript() -> None:
    events = RequestParser().feed(
        b"GET /a HTTP/1.1\r\n" + H + b"\r\n"
        b"POST /b HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    assert [type(e) for e in events] == [RequestHead, EndOfMessage, RequestHead, Data, EndOfMessage]
    first, second = events[0], events[2]
    assert isinstance(first, RequestHead) and isinstance(second, RequestHead)
    assert (first.method, first.target, first.keep_alive, first.host) == ("GET", "/a", True, "chat.llm")
    assert second.chunked and second.content_length is None
    # trailers are dropped: they are not headers of the request
    assert all(n != b"X-Trailer" for n, _ in second.headers)
    assert isinstance(events[3], Data) and events[3].data == b"abc"


def test_content_length_body_and_expect() -> None:
    events = RequestParser().feed(
        b"POST /x HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\nhello"
    )
    head = events[0]
    assert isinstance(head, RequestHead)
    assert head.content_length == 5 and head.expect_continue and head.has_body
    assert [e.data for e in events if isinstance(e, Data)] == [b"hello"]


def test_unknown_expectation_is_417() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        RequestParser().feed(b"POST /x HTTP/1.1\r\n" + H + b"Expect: teapot\r\n\r\n")
    assert info.value.status == 417


def test_http10_without_host_is_fine_and_not_keep_alive() -> None:
    (head, end) = RequestParser().feed(b"GET / HTTP/1.0\r\n\r\n")
    assert isinstance(head, RequestHead) and isinstance(end, EndOfMessage)
    assert head.version == "1.0" and not head.keep_alive


def test_upgrade_hands_over_raw_bytes() -> None:
    events = RequestParser().feed(
        b"GET /ws HTTP/1.1\r\n" + H + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"
    )
    head = events[0]
    assert isinstance(head, RequestHead) and head.upgrade
    assert isinstance(events[-1], Upgrade) and events[-1].rest == b"\x81\x05hello"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 5000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: 1\r\n" % i for i in range(30)) + b"\r\n", 431),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n" + H + b"\r\n", 431),
        (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1001\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3e9\r\n" + b"a" * 1001, 413),
    ],
    ids=["big-header", "many-headers", "long-target", "content-length", "chunked"],
)
def test_limits(data: bytes, status: int) -> None:
    parser = RequestParser(max_header_bytes=4096, max_headers=20, max_body_bytes=1000)
    with pytest.raises(RemoteProtocolError) as info:
        parser.feed(data)
    assert info.value.status == status


def test_head_limit_applies_to_a_head_arriving_in_pieces() -> None:
    parser = RequestParser(max_header_bytes=1024)
    parser.feed(b"GET / HTTP/1.1\r\n" + H)
    with pytest.raises(RemoteProtocolError) as info:
        for _ in range(100):
            parser.feed(b"X-Slow: " + b"b" * 50 + b"\r\n")
    assert info.value.status == 431


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    try:
        RequestParser().feed(data)
    except RemoteProtocolError as exc:
        assert exc.status in (400, 413, 417, 431, 505)


# ---- responses -----------------------------------------------------------------------------


def test_response_transcript_informational_then_final() -> None:
    p = ResponseParser()
    events = p.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    kinds = [type(e) for e in events]
    assert kinds == [ResponseHead, EndOfMessage, ResponseHead, Data, EndOfMessage]
    assert [e.status for e in events if isinstance(e, ResponseHead)] == [100, 200]


def test_response_to_head_has_no_body_and_parser_is_reusable() -> None:
    p = ResponseParser()
    p.expect(head_request=True)
    events = p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    assert [type(e) for e in events] == [ResponseHead, EndOfMessage]
    p.expect(head_request=False)
    events = p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert [e.data for e in events if isinstance(e, Data)] == [b"hello"]


def test_close_delimited_response_ends_at_eof() -> None:
    p = ResponseParser()
    events = p.feed(b"HTTP/1.1 200 OK\r\n\r\nabc")
    head = events[0]
    assert isinstance(head, ResponseHead) and not head.keep_alive
    assert [type(e) for e in p.eof()] == [EndOfMessage]


def test_truncated_response_is_an_upstream_error() -> None:
    p = ResponseParser()
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(RemoteProtocolError) as info:
        p.eof()
    assert info.value.status == 502


def test_response_with_odd_transfer_encoding_is_refused() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        ResponseParser().feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    assert info.value.status == 502


def test_switching_protocols_hands_over_raw_bytes() -> None:
    events = ResponseParser().feed(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nRAW"
    )
    assert isinstance(events[0], ResponseHead) and events[0].status == 101
    assert isinstance(events[-1], Upgrade) and events[-1].rest == b"RAW"
