"""The admin listener (plain HTTP, loopback only): ``/ready``, ``/stats/prometheus``, ``/config_dump``,
``/tap``.

``/tap`` is a Server-Sent Events stream of request metadata (:mod:`meshward.telemetry.taphub`)
for ``meshward tap`` and the dashboard; the stream lasts until the reader hangs up, and a reader
that falls behind loses the oldest events instead of slowing the sidecar.

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
from meshward.telemetry.taphub import TapSubscriber, tap_hub

if TYPE_CHECKING:
    from meshward.proxy.sidecar import Sidecar

__all__ = ["AdminConnection"]


class AdminConnection(asyncio.Protocol):
    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.parser = RequestParser(16384, 50, 0)
        self.transport: asyncio.Transport | None = None
        self.tap: TapSubscriber | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.tap is not None:
            tap_hub(self.sidecar.runtime).unsubscribe(self.tap)
            self.tap = None

    def pause_writing(self) -> None:
        if self.tap is not None:
            self.tap.pause()

    def resume_writing(self) -> None:
        if self.tap is not None:
            self.tap.resume()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.tap is not None:
            return  # a tap stream reads nothing more
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
        elif path == "/tap" and head.method == "GET" and tap_hub(self.sidecar.runtime).enabled:
            self._start_tap()
        else:
            self._send(404, b"text/plain", b"not found: /ready /stats/prometheus /config_dump /tap\n", close)

    def _start_tap(self) -> None:
        assert self.transport is not None
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]
        self.transport.write(response_head(200, None, [*headers, (b"connection", b"close")]) + b": tap\n\n")
        self.transport.set_write_buffer_limits(high=256 * 1024)
        self.tap = TapSubscriber(self.transport.write)
        tap_hub(self.sidecar.runtime).subscribe(self.tap)

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
