"""The asyncio adapter of a client connection: TLS peer check, then bytes to the session.

Everything HTTP (parsing, pipelining, backpressure, timeouts) is the transport-agnostic
:class:`~meshward.proxy.session.ClientSession`; this protocol only checks the peer's SVID when
the connection is made (mesh mTLS) and forwards asyncio's callbacks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from meshward.filters.base import Peer
from meshward.proxy.session import ClientSession, Side, new_request_id
from meshward.tls.peer import PeerIdentity, PeerIdentityError, peer_identity

__all__ = ["DownstreamConnection", "Side", "new_request_id"]

log = logging.getLogger("meshward.proxy")


class DownstreamConnection(asyncio.Protocol):
    """One accepted client connection; ``session`` serves it."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self.session = ClientSession(side)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = cast(asyncio.Transport, transport)
        side = self.side
        sidecar = side.sidecar
        stats = sidecar.stats
        stats.connections[side.name] += 1
        tr.set_write_buffer_limits(high=sidecar.options.write_buffer_high)
        peername = transport.get_extra_info("peername") or ("", 0)
        peer = Peer(str(peername[0]), int(peername[1]))
        ident: PeerIdentity | None = None
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None and sidecar.options.inbound_tls == "mesh":
            try:
                ident = peer_identity(sslobj, sidecar.trust_domain, sidecar.identity.revoked)
            except PeerIdentityError as refused:
                stats.tls_failures["peer_identity"] += 1
                log.info("refused inbound connection from %s: %s", peer.ip, refused)
                self.session.closing = True
                tr.abort()
                return
            sid = ident.spiffe_id
            peer.spiffe_id = sid.uri
            peer.namespace = sid.namespace
            peer.service_account = sid.service_account
        self.session.start(tr, peer, ident)

    def data_received(self, data: bytes) -> None:
        self.session.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.lost()

    def pause_writing(self) -> None:
        self.session.pause_writing()

    def resume_writing(self) -> None:
        self.session.resume_writing()
