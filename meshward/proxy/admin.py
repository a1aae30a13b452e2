"""The admin listener (plain HTTP, loopback only): ``/ready``, ``/stats/prometheus``, ``/config_dump``.

Nothing secret is ever served: the config dump shows the identity's SPIFFE ID, serial and
expiry, never key material.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, cast

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from meshward.http.errors import RemoteProtocolError
from meshward.http.framing import response_head
from meshward.http.normalize import split_target
from meshward.http.parser import RequestHead, RequestParser

if TYPE_CHECKING:
    from meshward.proxy.sidecar import Sidecar

__all__ = ["AdminConnection"]


class AdminConnection(asyncio.Protocol):
    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.parser = RequestParser(16384, 50, 0)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            events = self.parser.feed(data)
        except RemoteProtocolError as exc:
            self._send(exc.status, b"text/plain", exc.message.encode() + b"\n", close=True)
            return
        for ev in events:
            if isinstance(ev, RequestHead):
                self._serve(ev)

    def _serve(self, head: RequestHead) -> None:
        try:
            _, path, _ = split_target(head.target)
        except RemoteProtocolError:
            path = ""
        close = not head.keep_alive
        if head.method not in ("GET", "HEAD"):
            self._send(405, b"text/plain", b"method not allowed\n", close)
        elif path == "/ready":
            ready = self.sidecar.ready
            self._send(200 if ready else 503, b"text/plain", b"LIVE\n" if ready else b"NOT READY\n", close)
        elif path == "/stats/prometheus":
            body = generate_latest(self.sidecar.runtime_registry)
            self._send(200, CONTENT_TYPE_LATEST.encode(), body, close)
        elif path == "/config_dump":
            doc = self.sidecar.config_dump()
            self._send(200, b"application/json", _json(doc), close)
        else:
            self._send(404, b"text/plain", b"not found: /ready /stats/prometheus /config_dump\n", close)

    def _send(self, status: int, ctype: bytes, body: bytes, close: bool) -> None:
        assert self.transport is not None
        headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
        if close:
            headers.append((b"connection", b"close"))
        self.transport.write(response_head(status, None, headers) + body)
        if close:
            self.transport.close()


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, sort_keys=True, default=str).encode() + b"\n"
