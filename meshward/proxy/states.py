"""The states of one exchange, their transition tables, and the ports it acts through.

An exchange is two machines side by side (h11's idea): the request as the client sends it and
the response as the client gets it. Each moves only along the edges of its table; a move off
the table is our bug (:class:`LocalProtocolError`), never the peer's. The request::

    RECEIVING ─forward─▶ STREAMING ─end─▶ DONE
        │  └──────────────end────────────▶ DONE
        └─local answer─▶ DISCARDING ─end─▶ DONE       (STREAMING ─local answer─▶ DISCARDING too)

and the response::

    WAITING ─1xx─▶ INTERIM ─end─▶ WAITING
    WAITING ─head─▶ BODY ─end─▶ DONE              (head sent at once)
    WAITING ─head─▶ HELD ─first byte─▶ BODY        (held while the filters hold the body back)
    WAITING ─101 / CONNECT─▶ TUNNEL                (raw bytes both ways until a side closes)
    WAITING | INTERIM | HELD ─local answer─▶ DONE  (nothing of an upstream answer was sent)

The exchange never touches a socket: what it does goes out through two ports,
:class:`ClientPort` (the downstream connection) and :class:`UpstreamPort` (the upstream
connection it was given), which the asyncio adapters implement and the transcript tests record.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from meshward.http.events import ResponseHead
    from meshward.proxy.machine import ExchangeMachine
    from meshward.proxy.upstream import UpstreamTarget

__all__ = [
    "REQUEST_BITS",
    "REQUEST_MOVES",
    "REQ_DISCARDING",
    "REQ_DONE",
    "REQ_RECEIVING",
    "REQ_STREAMING",
    "RESPONSE_BITS",
    "RESPONSE_MOVES",
    "RESP_BODY",
    "RESP_DONE",
    "RESP_HELD",
    "RESP_INTERIM",
    "RESP_TUNNEL",
    "RESP_WAITING",
    "ClientPort",
    "LocalProtocolError",
    "Observer",
    "Req",
    "Resp",
    "UpstreamPort",
]


class Req(IntEnum):
    """Where the request from the client is."""

    RECEIVING = 0  # its head is in; body bytes are held here (not forwarded yet)
    STREAMING = 1  # forwarded: body bytes go on to the upstream as they arrive
    DISCARDING = 2  # answered locally first: the rest of a small body is dropped
    DONE = 3  # the whole request is in


class Resp(IntEnum):
    """Where the response to the client is."""

    WAITING = 0  # no final head yet: nothing was sent to the client
    INTERIM = 1  # a 1xx head came from the upstream; its end comes next
    HELD = 2  # the final head is built but held until a body byte leaves the filters
    BODY = 3  # the head left; body bytes follow
    TUNNEL = 4  # 101 / CONNECT: raw bytes both ways
    DONE = 5  # ended: the upstream's answer, or a local one


# The states as plain module constants for the hot path: looking a member up on its Enum class
# costs about 150 ns a time in CPython 3.11, a module global about 20.
REQ_RECEIVING: Final = Req.RECEIVING
REQ_STREAMING: Final = Req.STREAMING
REQ_DISCARDING: Final = Req.DISCARDING
REQ_DONE: Final = Req.DONE
RESP_WAITING: Final = Resp.WAITING
RESP_INTERIM: Final = Resp.INTERIM
RESP_HELD: Final = Resp.HELD
RESP_BODY: Final = Resp.BODY
RESP_TUNNEL: Final = Resp.TUNNEL
RESP_DONE: Final = Resp.DONE

REQUEST_MOVES: Final[dict[Req, frozenset[Req]]] = {
    Req.RECEIVING: frozenset({Req.STREAMING, Req.DISCARDING, Req.DONE}),
    Req.STREAMING: frozenset({Req.DISCARDING, Req.DONE}),
    Req.DISCARDING: frozenset({Req.DONE}),
    Req.DONE: frozenset(),
}

RESPONSE_MOVES: Final[dict[Resp, frozenset[Resp]]] = {
    Resp.WAITING: frozenset({Resp.INTERIM, Resp.HELD, Resp.BODY, Resp.TUNNEL, Resp.DONE}),
    Resp.INTERIM: frozenset({Resp.WAITING, Resp.DONE}),
    Resp.HELD: frozenset({Resp.BODY, Resp.DONE}),
    Resp.BODY: frozenset({Resp.DONE}),
    Resp.TUNNEL: frozenset(),
    Resp.DONE: frozenset(),
}


def _bits(moves: dict[Req, frozenset[Req]] | dict[Resp, frozenset[Resp]]) -> tuple[int, ...]:
    """The table as one bit mask per state (bit ``n`` set: a move to state ``n`` is allowed)."""
    masks = [0] * len(moves)
    for state, targets in moves.items():
        for target in targets:
            masks[state] |= 1 << target
    return tuple(masks)


# What the machine checks on every move: an index and a shift, no hashing on the hot path.
REQUEST_BITS: Final = _bits(REQUEST_MOVES)
RESPONSE_BITS: Final = _bits(RESPONSE_MOVES)


class LocalProtocolError(Exception):
    """The exchange was driven off its transition table: a bug in the sidecar, not the peer."""


class ClientPort(Protocol):
    """What an exchange may do to its client connection (and ask of it)."""

    @property
    def closing(self) -> bool: ...

    @property
    def write_paused(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def pause_buffer_full(self) -> None: ...

    def resume_buffer_full(self) -> None: ...

    def pause_upstream_full(self) -> None: ...

    def resume_upstream_full(self) -> None: ...

    def cork(self) -> None:
        """Collect writes until :meth:`uncork` (one write per upstream read)."""

    def uncork(self) -> None: ...

    def release_upstream(self, up: UpstreamPort) -> None:
        """Park an upstream connection whose exchange ended cleanly (the keep-alive pool)."""

    def exchange_finished(self, ex: ExchangeMachine) -> None:
        """Record the outcome; serve the next pipelined request or close."""


class Observer(Protocol):
    """Who watches an exchange served by a service plan (:class:`meshward.proxy.forward.Attempt`)."""

    def on_head(self, rh: ResponseHead) -> bool:
        """Sees a final answer's head first; True drops it (the request is retried elsewhere)."""

    def on_error(self, name: str) -> bool:
        """An upstream failure before any answer; True when the request is retried elsewhere."""

    def on_data(self, data: bytes) -> None: ...

    def on_finish(self) -> None: ...


class UpstreamPort(Protocol):
    """What an exchange may do to the upstream connection it was given."""

    exchange: ExchangeMachine | None
    requests: int

    @property
    def target(self) -> UpstreamTarget: ...

    def expect(self, head_request: bool) -> None: ...

    def write(self, data: bytes) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...
