"""The control plane's API client for an event loop (the sidecar's control agent).

The contract of :class:`meshward.control.client.ControlClient` on asyncio streams: mTLS, the
server must present ``spiffe://TD/ns/meshward-system/sa/control`` chained to the trust bundle
(else no byte of a request is sent), JSON in and out, and the same errors —
:class:`~meshward.control.client.ControlUnavailable` (retry later) and
:class:`~meshward.control.client.ControlRefused` (the control plane said no). One keep-alive
connection per client; concurrent callers take turns (a lock), so a long-poll watch gets a
client of its own.

The control plane always answers with a ``Content-Length`` (never chunked), so reading an
answer is one head and one counted body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import urllib.parse
from typing import Any

from meshward.control.client import ControlRefused, ControlUnavailable, decode_answer
from meshward.tls.control import control_id
from meshward.tls.peer import peer_spiffe_id

__all__ = ["AsyncControlClient"]

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024


class AsyncControlClient:
    """Requests to one control plane over mTLS from a coroutine; JSON in, JSON out."""

    def __init__(self, url: str, trust_domain: str, context: ssl.SSLContext, timeout: float = 10.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "https" or not parsed.hostname:
            raise ValueError(f"control plane URL must be https://HOST:PORT, not {url!r}")
        self.url = url
        self._host = parsed.hostname
        self._port = parsed.port or 443
        self._expected = control_id(trust_domain)
        self._context = context
        self._timeout = timeout
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        streams, self._streams = self._streams, None
        if streams is not None:
            streams[1].close()
            with contextlib.suppress(OSError, ssl.SSLError, asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(streams[1].wait_closed(), 1.0)

    def _drop(self) -> None:
        streams, self._streams = self._streams, None
        if streams is not None:
            streams[1].close()

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._streams is None:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        self._host, self._port, ssl=self._context, server_hostname=self._host
                    ),
                    self._timeout,
                )
            except (OSError, ssl.SSLError, TimeoutError) as exc:
                raise ControlUnavailable(f"control plane at {self.url} is unreachable: {exc}") from exc
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = writer.get_extra_info("ssl_object")
            peer = peer_spiffe_id(tls) if tls is not None else None
            if peer != self._expected:
                writer.close()
                raise ControlUnavailable(
                    f"{self.url} presented {peer.uri if peer else 'no SPIFFE ID'}, "
                    f"not the control plane {self._expected.uri}"
                )
            self._streams = (reader, writer)
        return self._streams

    async def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Send one request (JSON ``body`` or ``raw`` bytes); (status, JSON body) for 2xx, else raise."""
        status, _, payload = await self.request_raw(method, path, body, timeout, headers, raw)
        return status, payload

    async def post_audit(self, batch: bytes) -> tuple[int, bytes]:
        """POST one NDJSON audit batch (a spool's format) to ``/v1/audit``: (status, JSON body)
        whatever the control plane answered (the shipper decides); raises if it is unreachable.
        The one path a sidecar's audit records take (an :data:`meshward.audit.shipper.AuditPost`)."""
        try:
            status, answer = await self.request(
                "POST", "/v1/audit", raw=batch, headers={"Content-Type": "application/x-ndjson"}
            )
        except ControlRefused as exc:
            return exc.status, json.dumps({"error": str(exc), **exc.body}).encode()
        return status, json.dumps(answer).encode()

    async def request_raw(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, bytes, dict[str, Any]]:
        """:meth:`request`, also giving the answer's bytes as received (status, bytes, JSON body)."""
        data = json.dumps(body).encode() if body is not None else raw
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        head = [f"{method} {path} HTTP/1.1", f"Host: {self._host}:{self._port}"]
        head += [f"{k}: {v}" for k, v in hdrs.items()]
        head.append(f"Content-Length: {len(data or b'')}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (data or b"")
        async with self._lock:
            for attempt in (1, 2):  # a kept-alive connection the server closed meanwhile: one retry
                fresh = self._streams is None
                reader, writer = await self._connection()
                try:
                    writer.write(request)
                    status, close, payload_raw = await asyncio.wait_for(
                        self._response(reader), timeout or self._timeout
                    )
                    break
                except (OSError, ssl.SSLError, asyncio.IncompleteReadError, EOFError, TimeoutError) as exc:
                    self._drop()
                    stale = not fresh and isinstance(
                        exc, asyncio.IncompleteReadError | ConnectionResetError | BrokenPipeError
                    )
                    if attempt == 2 or not stale:
                        reason = str(exc) or type(exc).__name__
                        raise ControlUnavailable(f"control plane at {self.url}: {reason}") from exc
                except BaseException:  # cancelled mid-request: the connection is in an unknown state
                    self._drop()
                    raise
            if close:
                self._drop()
        return status, payload_raw, decode_answer(status, payload_raw)

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
        """(status, connection: close, body) of one answer."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise EOFError("answer head too large") from exc
        if len(head) > MAX_HEAD:
            raise EOFError("answer head too large")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise EOFError(f"not an HTTP answer: {lines[0][:80]!r}")
        length, close = 0, parts[0] == "HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                value = value.strip()
                if not value.isdigit() or int(value) > MAX_BODY:
                    raise EOFError(f"bad Content-Length {value[:20]!r}")
                length = int(value)
            elif name == "connection":
                close = value.strip().lower() == "close"
        body = await reader.readexactly(length) if length else b""
        return int(parts[1]), close, body
