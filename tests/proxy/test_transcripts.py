"""The proxy core's behaviours as transcripts: events in, every action out, no sockets.

Each test is a table read by :func:`tests.proxy.transcript.play` (``>>`` an event, ``<<`` what
it caused, ``|`` for CRLF); they run in milliseconds against the real parsers, connection
adapters and exchange machine, with recorded transports and a recorded upstream pool.
"""

from __future__ import annotations

from typing import Any

import pytest

from meshward.filters.base import Denial, Filter, RequestContext, ResponseDenied, StreamAbort
from meshward.http.parser import RequestHead, ResponseHead
from meshward.proxy.machine import ExchangeMachine
from meshward.proxy.options import SidecarOptions
from meshward.proxy.states import REQUEST_MOVES, RESPONSE_MOVES, LocalProtocolError, Req, Resp
from tests.proxy.transcript import play


class WantsBody(Filter):
    """Reads the whole request body before deciding (as DLP or a token budget does)."""

    name = "wants_body"

    def wants_request_body(self, ctx: RequestContext) -> bool:
        return True


class DenyBigBodies(WantsBody):
    name = "deny_big"

    async def on_request(self, ctx: RequestContext) -> Denial | None:
        if ctx.body is not None and len(ctx.body) > 3:
            return Denial("dlp", message="body refused", policy="ns/pii")
        return None


class DenyPath(Filter):
    """Refuses ``/deny`` from the head alone (as authz does), before any body byte is read."""

    name = "deny_path"
    eager_safe = True

    async def on_request(self, ctx: RequestContext) -> Denial | None:
        return Denial("authz", message="no", policy="ns/p") if ctx.path == "/deny" else None


class Passthrough(Filter):
    """Sees every response chunk and lets it through (SSE events must not wait for the next)."""

    name = "passthrough"

    def on_response_chunk(self, ctx: RequestContext, chunk: bytes) -> bytes:
        return chunk


class HoldThenDeny(Filter):
    """Holds the whole response body back, then refuses it: the client never sees the app's head."""

    name = "hold_then_deny"

    def on_response_headers(self, ctx: RequestContext, status: int, headers: list[tuple[str, str]]) -> bool:
        return True

    def on_response_chunk(self, ctx: RequestContext, chunk: bytes) -> bytes:
        return b""

    def on_response_end(self, ctx: RequestContext) -> bytes:
        raise ResponseDenied(Denial("dlp", message="answer refused", policy="ns/pii"))


class HoldThenRelease(HoldThenDeny):
    name = "hold_then_release"

    def on_response_end(self, ctx: RequestContext) -> bytes:
        return b"rewritten"


class AddHeaders(Filter):
    """Adds response fields, one of them with a CRLF that would split the head."""

    name = "add_headers"

    def on_response_headers(self, ctx: RequestContext, status: int, headers: list[tuple[str, str]]) -> bool:
        headers.append(("x-evil", "a\r\nset-cookie: stolen=1"))
        headers.append(("x-ok", "1"))
        return False


class HeadersOnly(Filter):
    """Looks at the response head and changes nothing."""

    name = "headers_only"

    def on_response_headers(self, ctx: RequestContext, status: int, headers: list[tuple[str, str]]) -> bool:
        return False


class DenyHead(Filter):
    name = "deny_head"

    def on_response_headers(self, ctx: RequestContext, status: int, headers: list[tuple[str, str]]) -> bool:
        raise ResponseDenied(Denial("export", message="too much", policy="ns/export"))


class CutAfterFirst(Filter):
    """Cuts a stream after its first chunk with a tail (a DLP block mid-stream)."""

    name = "cut"

    def on_response_chunk(self, ctx: RequestContext, chunk: bytes) -> bytes:
        if ctx.scratch.get("seen"):
            raise StreamAbort(b"[cut]", "test")
        ctx.scratch["seen"] = True
        return chunk


OK = "HTTP/1.1 200 OK|content-length: 2||ok"
TIMEOUTS = SidecarOptions(request_timeout=30, stream_idle_timeout=20)


def test_keep_alive_and_pipelining_one_exchange_at_a_time() -> None:
    t = play(
        f"""
        >> client GET /a HTTP/1.1|host: m|x-request-id: r1||
        << connect up1
        << up1 GET /a HTTP/1.1|host: m|x-request-id: r1||
        >> up1 {OK}
        << release up1
        << client {OK}
        # two pipelined requests: the second waits (client paused) until the first answered
        >> client GET /b HTTP/1.1|host: m|x-request-id: r2||GET /c HTTP/1.1|host: m|x-request-id: r3||
        << reuse up1
        << up1 GET /b HTTP/1.1|host: m|x-request-id: r2||
        << client pause
        >> up1 {OK}
        << release up1
        << reuse up1
        << up1 GET /c HTTP/1.1|host: m|x-request-id: r3||
        << client resume
        << client {OK}
        >> up1 {OK}
        << release up1
        << client {OK}
        """
    )
    assert t.stats.requests[("inbound", 200, "-")] == 3
    assert len(t.pool.upstreams) == 1 and t.pool.reuses == 2


def test_100_continue_answered_by_the_sidecar_when_a_filter_reads_the_body() -> None:
    play(
        f"""
        >> client POST /a HTTP/1.1|host: m|x-request-id: r1|expect: 100-continue|content-length: 5||
        << client HTTP/1.1 100 Continue||
        >> client hello
        << connect up1
        << up1 POST /a HTTP/1.1|host: m|x-request-id: r1|content-length: 5||hello
        >> up1 {OK}
        << release up1
        << client {OK}
        """,
        filters=[WantsBody()],
    )


def test_100_continue_relayed_from_the_app_when_no_filter_reads_the_body() -> None:
    play(
        f"""
        >> client POST /a HTTP/1.1|host: m|x-request-id: r1|expect: 100-continue|content-length: 5||
        << connect up1
        << up1 POST /a HTTP/1.1|host: m|x-request-id: r1|expect: 100-continue|content-length: 5||
        >> up1 HTTP/1.1 100 Continue||
        << client HTTP/1.1 100 Continue||
        >> client hello
        << up1 hello
        >> up1 {OK}
        << release up1
        << client {OK}
        """
    )


def test_a_filter_reading_the_body_may_refuse_it() -> None:
    t = play(
        """
        >> client POST /a HTTP/1.1|host: m|x-request-id: r1|content-length: 5||hel
        >> client lo
        << client HTTP/1.1 403 Forbidden|content-type: application/json|content-length: 43|x-request-id: r1||...
        """,
        filters=[DenyBigBodies()],
    )
    assert t.stats.requests[("inbound", 403, "DLP")] == 1


def test_a_denied_expect_100_request_closes_instead_of_waiting_for_its_body() -> None:
    play(
        """
        >> client POST /deny HTTP/1.1|host: m|x-request-id: r1|expect: 100-continue|content-length: 5||
        << client HTTP/1.1 403 Forbidden|content-type: application/json|content-length: 33|x-request-id: r1|connection: close||...
        << client close
        """,
        filters=[DenyPath()],
    )


def test_chunked_request_and_response_are_re_framed_chunk_by_chunk() -> None:
    play(
        """
        >> client POST /a HTTP/1.1|host: m|x-request-id: r1|transfer-encoding: chunked||5|hello|
        << connect up1
        << up1 POST /a HTTP/1.1|host: m|x-request-id: r1|transfer-encoding: chunked||5|hello|
        >> client 3;ext=1|abc|0||
        << up1 3|abc|
        << up1 0||
        >> up1 HTTP/1.1 200 OK|transfer-encoding: chunked||2|ok|
        << client HTTP/1.1 200 OK|transfer-encoding: chunked||2|ok|
        >> up1 0||
        << release up1
        << client 0||
        """
    )


def test_sse_events_are_flushed_one_by_one_through_chunk_filters() -> None:
    play(
        """
        >> client GET /events HTTP/1.1|host: m|x-request-id: r1||
        << connect up1
        << up1 GET /events HTTP/1.1|host: m|x-request-id: r1||
        >> up1 HTTP/1.1 200 OK|content-type: text/event-stream|transfer-encoding: chunked||
        << client HTTP/1.1 200 OK|content-type: text/event-stream|transfer-encoding: chunked||
        >> up1 b|data: one\\n\\n|
        << client b|data: one\\n\\n|
        >> up1 b|data: two\\n\\n|
        << client b|data: two\\n\\n|
        >> up1 0||
        << release up1
        << client 0||
        """,
        filters=[Passthrough()],
    )


def test_a_stream_abort_writes_its_tail_and_ends_the_chunked_body() -> None:
    play(
        """
        >> client GET /events HTTP/1.1|host: m|x-request-id: r1||
        << connect up1
        << up1 GET /events HTTP/1.1|host: m|x-request-id: r1||
        >> up1 HTTP/1.1 200 OK|transfer-encoding: chunked||3|one|
        << client HTTP/1.1 200 OK|transfer-encoding: chunked||3|one|
        >> up1 3|two|
        << up1 close
        << client 5|[cut]|0||
        """,
        filters=[CutAfterFirst()],
    )


def test_head_and_body_of_one_upstream_read_leave_in_one_write() -> None:
    play(
        """
        >> client GET /a HTTP/1.1|host: m|x-request-id: r1||
        << connect up1
        << up1 GET /a HTTP/1.1|host: m|x-request-id: r1||
        >> up1 HTTP/1.1 200 OK|content-length: 10||hello
        << client HTTP/1.1 200 OK|content-length: 10||hello
        >> up1 world
        << release up1
        << client world
        """
    )


def test_an_idempotent_request_is_replayed_once_after_the_keep_alive_race() -> None:
    play(
        f"""
        >> client GET /a HTTP/1.1|host: m|x-request-id: r1||
        << connect up1
        << up1 GET /a HTTP/1.1|host: m|x-request-id: r1||
        >> up1 {OK}
        << release up1
        << client {OK}
        # the pooled connection was closed by the app as the request left: sent again, once
        >> client GET /b HTTP/1.1|host: m|x-request-id: r2||
        << reuse up1
        << up1 GET /b HTTP/1.1|host: m|x-request-id: r2||
        >> up1 reset
        << connect up2
        << up2 GET /b HTTP/1.1|host: m|x-request-id: r2||
        >> up2 reset
        << client HTTP/1.1 502 Bad Gateway|content-type: application/json|content-length: 79|x-request-id: r2||...
        """
    )


def test_a_post_is_never_replayed() -> None:
    t = play(
        f"""
        >> client GET /a HTTP/1.1|host: m|x-request-id: r1||
        << connect up1
        << up1 GET /a HTTP/1.1|host: m|x-request-id: r1||
        >> up1 {OK}
        << release up1
        << client {OK}
        >> client POST /b HTTP/1.1|host: m|x-request-id: r2|content-length: 2||hi
        << reuse up1
        << up1 POST /b HTTP/1.1|host: m|x-request-id: r2|content-length: 2||hi
        >> up1 reset
        << client HTTP/1.1 502 Bad Gateway|content-type: application/json|content-length: 79|x-request-id: r2||...
        """
    )
    assert t.stats.requests[("inbound", 502, "UC")] == 1


def test_a_reset_of_a_fresh_connection_is_not_replayed() -> None:
    play(
        """
        >> client GET /b HTTP/1.1|host: m|x-request-id: r2||
        << connect up1
        << up1 GET /b HTTP/1.1|host: m|x-request-id: r2||
        >> up1 reset
        << client HTTP/1.1 502 Bad Gateway|content-type: application/json|content-length: 79|x-request-id: r2||...
        """
    )


def test_a_response_denied_while_held_answers_the_denial_and_reuses_the_upstream() -> None:
    t = play(
        """
        >> client GET /a HTTP/1.1|host: m|x-request-id: r1||
        << connect up1
        << up1 GET /a HTTP/1.1|host: m|x-request-id: r1||
        >> up1 HTTP/1.1 200 OK|content-length: 5||he
        >> up1 llo
        << release up1
        << client HTTP/1.1 403 Forbidden|content-type: application/json|content-length: 45|x-request-id: r1||{"error":"answer refused","request_id":"r1"}\\n
        """,
        filters=[HoldThenDeny()],
    )
    assert t.stats.requests[("inbound", 403, "DLP")] == 1


def test_a_held_head_is_released_re_framed_with_the_rewritten_body() -> None:
    play(
        """
        >> client GET /a HTTP/1.1|host: m|x-request-id: r1||
        << connect up1
        << up1 GET /a HTTP/1.1|host: m|x-request-id: r1||
        >> up1 HTTP/1.1 200 OK|content-length: 5||hello
        << release up1
        << client HTTP/1.1 200 OK|transfer-encoding: chunked||9|rewritten|0||
        """,
        filters=[HoldThenRelease()],
    )


def test_fields_a_filter_adds_are_sent_and_a_field_with_crlf_is_dropped() -> None:
    play(
        """
        >> client GET /a HTTP/1.1|host: m|x-request-id: r1||
        << connect up1
        << up1 GET /a HTTP/1.1|host: m|x-request-id: r1||
        >> up1 HTTP/1.1 200 OK|content-length: 2|keep-alive: timeout=5||ok
        << release up1
        << client HTTP/1.1 200 OK|content-length: 2|x-ok: 1||ok
        """,
        filters=[AddHeaders()],
    )
    play(
        """
        >> client GET /a HTTP/1.1|host: m|x-request-id: r1||
        << connect up1
        << up1 GET /a HTTP/1.1|host: m|x-request-id: r1||
        >> up1 HTTP/1.1 200 OK|content-length: 2||ok
        << release up1
        << client HTTP/1.1 200 OK|content-length: 2||ok
        """,
        filters=[Passthrough(), HeadersOnly()],
    )
    # dropped too when the body is re-framed: the old length goes with it
    play(
        """
        >> client GET /a HTTP/1.1|host: m|x-request-id: r1||
        << connect up1
        << up1 GET /a HTTP/1.1|host: m|x-request-id: r1||
        >> up1 HTTP/1.1 200 OK|content-length: 5||hello
        << release up1
        << client HTTP/1.1 200 OK|x-ok: 1|transfer-encoding: chunked||9|rewritten|0||
        """,
        filters=[HoldThenRelease(), AddHeaders()],
    )


def test_a_head_denied_by_a_filter_drops_the_upstream_response() -> None:
    t = play(
        """
        >> client GET /a HTTP/1.1|host: m|x-request-id: r1||
        << connect up1
        << up1 GET /a HTTP/1.1|host: m|x-request-id: r1||
        >> up1 HTTP/1.1 200 OK|content-length: 5||hello
        << up1 close
        << client HTTP/1.1 403 Forbidden|content-type: application/json|content-length: 39|x-request-id: r1||{"error":"too much","request_id":"r1"}\\n
        """,
        filters=[DenyHead()],
    )
    assert t.stats.requests[("inbound", 403, "DLP")] == 1


def test_no_answer_in_time_is_a_504_and_the_connection_stays() -> None:
    t = play(
        """
        >> client GET /b HTTP/1.1|host: m|x-request-id: r2||
        << connect up1
        << up1 GET /b HTTP/1.1|host: m|x-request-id: r2||
        >> sweep 10
        >> sweep 31
        << up1 close
        << client HTTP/1.1 504 Gateway Timeout|content-type: application/json|content-length: 79|x-request-id: r2||...
        """,
        options=TIMEOUTS,
    )
    assert t.stats.requests[("inbound", 504, "UT")] == 1


def test_a_body_that_stops_coming_is_a_408_and_a_close() -> None:
    t = play(
        """
        >> client POST /b HTTP/1.1|host: m|x-request-id: r2|content-length: 10||abc
        >> sweep 1
        >> sweep 22
        << client HTTP/1.1 408 Request Timeout|content-type: application/json|content-length: 85|x-request-id: r2|connection: close||...
        << client close
        """,
        options=TIMEOUTS,
        filters=[WantsBody()],
    )
    assert t.stats.requests[("inbound", 408, "SI")] == 1


def test_a_stalled_response_is_cut_after_the_stream_idle_timeout() -> None:
    t = play(
        """
        >> client GET /a HTTP/1.1|host: m|x-request-id: r1||
        << connect up1
        << up1 GET /a HTTP/1.1|host: m|x-request-id: r1||
        >> up1 HTTP/1.1 200 OK|content-length: 10||hello
        << client HTTP/1.1 200 OK|content-length: 10||hello
        >> sweep 1
        >> sweep 22
        << up1 close
        << client close
        """,
        options=TIMEOUTS,
    )
    assert t.stats.requests[("inbound", 200, "SI")] == 1


def test_a_websocket_upgrade_becomes_a_tunnel_with_held_bytes_first() -> None:
    play(
        """
        >> client GET /ws HTTP/1.1|host: m|x-request-id: r2|connection: upgrade|upgrade: websocket||early
        << connect up1
        << up1 GET /ws HTTP/1.1|host: m|x-request-id: r2|connection: upgrade|upgrade: websocket||
        >> up1 HTTP/1.1 101 Switching Protocols|connection: upgrade|upgrade: websocket||hi
        << up1 early
        << client HTTP/1.1 101 Switching Protocols|connection: upgrade|upgrade: websocket||hi
        >> client frame
        << up1 frame
        >> up1 eof
        << client close
        """
    )


def test_a_101_to_another_protocol_is_refused() -> None:
    play(
        """
        >> client GET /ws HTTP/1.1|host: m|x-request-id: r2|connection: upgrade|upgrade: websocket||
        << connect up1
        << up1 GET /ws HTTP/1.1|host: m|x-request-id: r2|connection: upgrade|upgrade: websocket||
        >> up1 HTTP/1.1 101 Switching Protocols|connection: upgrade|upgrade: h2c||
        << up1 close
        << client HTTP/1.1 502 Bad Gateway|content-type: application/json|content-length: 118|x-request-id: r2|connection: close||...
        << client close
        """
    )


def test_a_101_nobody_asked_for_is_refused() -> None:
    play(
        """
        >> client GET /ws HTTP/1.1|host: m|x-request-id: r2||
        << connect up1
        << up1 GET /ws HTTP/1.1|host: m|x-request-id: r2||
        >> up1 HTTP/1.1 101 Switching Protocols|connection: upgrade|upgrade: websocket||
        << up1 close
        << client HTTP/1.1 502 Bad Gateway|content-type: application/json|content-length: 93|x-request-id: r2||...
        """
    )


def test_the_client_going_away_mid_response_drops_the_upstream() -> None:
    t = play(
        """
        >> client GET /a HTTP/1.1|host: m|x-request-id: r1||
        << connect up1
        << up1 GET /a HTTP/1.1|host: m|x-request-id: r1||
        >> up1 HTTP/1.1 200 OK|content-length: 10||hello
        << client HTTP/1.1 200 OK|content-length: 10||hello
        >> client lost
        << up1 close
        """
    )
    assert t.stats.requests[("inbound", 200, "DC")] == 1


def test_the_upstream_going_away_mid_body_truncates_the_response() -> None:
    t = play(
        """
        >> client GET /a HTTP/1.1|host: m|x-request-id: r1||
        << connect up1
        << up1 GET /a HTTP/1.1|host: m|x-request-id: r1||
        >> up1 HTTP/1.1 200 OK|content-length: 10||hello
        << client HTTP/1.1 200 OK|content-length: 10||hello
        >> up1 reset
        << client close
        """
    )
    assert t.stats.requests[("inbound", 200, "UC")] == 1


def test_a_slow_client_pauses_the_upstream() -> None:
    play(
        """
        >> client GET /a HTTP/1.1|host: m|x-request-id: r1||
        << connect up1
        << up1 GET /a HTTP/1.1|host: m|x-request-id: r1||
        >> up1 HTTP/1.1 200 OK|content-length: 10||hello
        << client HTTP/1.1 200 OK|content-length: 10||hello
        >> client slow
        << up1 pause
        >> client drained
        << up1 resume
        >> up1 world
        << release up1
        << client world
        """
    )


def test_body_bytes_wait_for_the_connect_and_leave_with_the_head() -> None:
    play(
        f"""
        >> client POST /a HTTP/1.1|host: m|x-request-id: r1|content-length: 10||hello
        << connect up1
        >> client world
        >> up1 connected
        << up1 POST /a HTTP/1.1|host: m|x-request-id: r1|content-length: 10||helloworld
        >> up1 {OK}
        << release up1
        << client {OK}
        """,
        hold_connect=True,
    )


def test_a_refused_connect_is_a_503_saying_not_delivered() -> None:
    play(
        """
        >> client GET /a HTTP/1.1|host: m|x-request-id: r1||
        << connect up1
        << client HTTP/1.1 503 Service Unavailable|content-type: application/json|content-length: 86|x-request-id: r1|x-meshward-not-delivered: 1||...
        """,
        refuse_connect=True,
    )


def test_a_denial_before_the_body_ended_drops_the_rest_and_serves_the_next_request() -> None:
    play(
        f"""
        >> client POST /deny HTTP/1.1|host: m|x-request-id: r1|content-length: 6||abcd
        << client HTTP/1.1 403 Forbidden|content-type: application/json|content-length: ...
        >> client efGET /b HTTP/1.1|host: m|x-request-id: r2||
        << connect up1
        << up1 GET /b HTTP/1.1|host: m|x-request-id: r2||
        >> up1 {OK}
        << release up1
        << client {OK}
        """,
        filters=[DenyPath()],
    )


def test_an_http_1_0_client_gets_a_close_delimited_body() -> None:
    play(
        """
        >> client GET /a HTTP/1.0|x-request-id: r1||
        << connect up1
        << up1 GET /a HTTP/1.1|x-request-id: r1||
        >> up1 HTTP/1.1 200 OK||hello
        << client HTTP/1.1 200 OK|connection: close||hello
        >> up1 eof
        << client close
        """
    )


def test_a_head_answer_has_no_body_whatever_its_length_says() -> None:
    play(
        """
        >> client HEAD /a HTTP/1.1|host: m|x-request-id: r1||
        << connect up1
        << up1 HEAD /a HTTP/1.1|host: m|x-request-id: r1||
        >> up1 HTTP/1.1 200 OK|content-length: 5||
        << release up1
        << client HTTP/1.1 200 OK|content-length: 5||
        """
    )


def test_connection_close_from_the_client_ends_the_connection_after_the_answer() -> None:
    play(
        f"""
        >> client GET /a HTTP/1.1|host: m|x-request-id: r1|connection: close||
        << connect up1
        << up1 GET /a HTTP/1.1|host: m|x-request-id: r1||
        >> up1 {OK}
        << release up1
        << client HTTP/1.1 200 OK|content-length: 2|connection: close||ok
        << client close
        """
    )


def test_an_interim_103_is_not_forwarded() -> None:
    play(
        f"""
        >> client GET /a HTTP/1.1|host: m|x-request-id: r1||
        << connect up1
        << up1 GET /a HTTP/1.1|host: m|x-request-id: r1||
        >> up1 HTTP/1.1 103 Early Hints|link: </s.css>||{OK}
        << release up1
        << client {OK}
        """
    )


def test_an_upstream_that_closes_is_not_pooled() -> None:
    play(
        f"""
        >> client GET /a HTTP/1.1|host: m|x-request-id: r1||
        << connect up1
        << up1 GET /a HTTP/1.1|host: m|x-request-id: r1||
        >> up1 HTTP/1.1 200 OK|content-length: 2|connection: close||ok
        << up1 close
        << client {OK}
        >> client GET /b HTTP/1.1|host: m|x-request-id: r2||
        << connect up2
        << up2 GET /b HTTP/1.1|host: m|x-request-id: r2||
        """
    )


# ---- the transition tables -------------------------------------------------------------------


def test_every_state_has_a_row_and_done_is_final() -> None:
    assert set(REQUEST_MOVES) == set(Req) and set(RESPONSE_MOVES) == set(Resp)
    assert not REQUEST_MOVES[Req.DONE] and not RESPONSE_MOVES[Resp.DONE]
    assert not RESPONSE_MOVES[Resp.TUNNEL]  # a tunnel ends with its connections, not a move
    for row in (*REQUEST_MOVES.values(), *RESPONSE_MOVES.values()):
        assert all(isinstance(state, (Req, Resp)) for state in row)


def _machine() -> ExchangeMachine:
    """A machine with no connections: only its state moves are exercised (no port is called)."""
    head = RequestHead("GET", "/", "1.1", [], True, None, False, False, False, "m")
    client: Any = None
    return ExchangeMachine(client, head, "r", lambda: 0.0, SidecarOptions())


@pytest.mark.parametrize("start", list(Resp))
@pytest.mark.parametrize("new", list(Resp))
def test_the_machine_moves_the_response_exactly_along_its_table(start: Resp, new: Resp) -> None:
    machine = _machine()
    machine.resp = start
    if new in RESPONSE_MOVES[start]:
        machine._resp_to(new)
        assert machine.resp is new
    else:
        with pytest.raises(LocalProtocolError):
            machine._resp_to(new)
        assert machine.resp is start


@pytest.mark.parametrize("start", list(Req))
@pytest.mark.parametrize("new", list(Req))
def test_the_machine_moves_the_request_exactly_along_its_table(start: Req, new: Req) -> None:
    machine = _machine()
    machine.req = start
    if new in REQUEST_MOVES[start]:
        machine._req_to(new)
        assert machine.req is new
    else:
        with pytest.raises(LocalProtocolError):
            machine._req_to(new)
        assert machine.req is start


def test_an_interim_head_waits_for_its_end() -> None:
    assert Resp.INTERIM in RESPONSE_MOVES[Resp.WAITING] and Resp.WAITING in RESPONSE_MOVES[Resp.INTERIM]
    assert ResponseHead(103, b"", "1.1", [], True, None, False).status < 200
