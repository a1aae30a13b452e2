"""The control plane's API client for blocking callers: the CLI and the mesh runner (operator certificate).

Plain ``http.client`` over an mTLS socket: after each connect the server must present exactly
``spiffe://TD/ns/meshward-system/sa/control`` chained to the trust bundle, else the connection
is refused before a byte of the request is sent. One client holds one keep-alive connection and
is used by one thread at a time (the sidecar's agent uses :mod:`meshward.control.asyncclient`).

Errors say whose fault they are: :class:`ControlUnavailable` (not reachable or not the control
plane: retry later) and :class:`ControlRefused` (the control plane answered no: don't retry).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from meshward.identity.state import MeshState
from meshward.tls.contexts import client_context_files
from meshward.tls.control import control_id
from meshward.tls.peer import peer_spiffe_id

__all__ = [
    "ControlClient",
    "ControlInfo",
    "ControlRefused",
    "ControlUnavailable",
    "decode_answer",
    "operator_client",
    "pid_alive",
    "read_control_info",
]


class ControlUnavailable(ConnectionError):
    """The control plane cannot be reached (or is not who it should be); try again later."""


class ControlRefused(Exception):
    """The control plane refused the request; ``status`` and ``body`` say why."""

    def __init__(self, status: int, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body or {}


@dataclass(frozen=True, slots=True)
class ControlInfo:
    """What ``<state>/control.json`` says about the running control plane."""

    url: str
    pid: int


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_control_info(state_dir: Path) -> ControlInfo | None:
    """The control plane recorded in the state directory, if its process is alive."""
    try:
        doc = json.loads((state_dir / "control.json").read_text())
        info = ControlInfo(str(doc["url"]), int(doc["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if pid_alive(info.pid) else None


class ControlClient:
    """Requests to one control plane over mTLS; JSON in, JSON out."""

    def __init__(
        self,
        url: str,
        trust_domain: str,
        bundle_pem: bytes,
        cert: Path | None = None,
        key: Path | None = None,
        timeout: float = 10.0,
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "https" or not parsed.hostname:
            raise ValueError(f"control plane URL must be https://HOST:PORT, not {url!r}")
        self.url = url
        self._host = parsed.hostname
        self._port = parsed.port or 443
        self._expected = control_id(trust_domain)
        self._context = client_context_files(bundle_pem, cert, key)
        self._timeout = timeout
        self._conn: http.client.HTTPSConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            conn = http.client.HTTPSConnection(
                self._host, self._port, context=self._context, timeout=self._timeout
            )
            try:
                conn.connect()
            except (OSError, ssl.SSLError) as exc:
                conn.close()
                raise ControlUnavailable(f"control plane at {self.url} is unreachable: {exc}") from exc
            assert isinstance(conn.sock, ssl.SSLSocket)
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle + delayed-ACK stalls
            peer = peer_spiffe_id(conn.sock)
            if peer != self._expected:
                conn.close()
                raise ControlUnavailable(
                    f"{self.url} presented {peer.uri if peer else 'no SPIFFE ID'}, "
                    f"not the control plane {self._expected.uri}"
                )
            self._conn = conn
        return self._conn

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Send one request (JSON ``body`` or ``raw`` bytes); (status, JSON body) for 2xx, else raise."""
        data = json.dumps(body).encode() if body is not None else raw
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        for attempt in (1, 2):  # a kept-alive connection the server closed meanwhile: one retry
            conn = self._connection()
            try:
                if conn.sock is not None:
                    conn.sock.settimeout(timeout or self._timeout)
                conn.request(method, path, body=data, headers=hdrs)
                response = conn.getresponse()
                raw = response.read()
                status = response.status
                break
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                fresh = isinstance(
                    exc, http.client.RemoteDisconnected | BrokenPipeError | ConnectionResetError
                )
                if attempt == 2 or not fresh:
                    raise ControlUnavailable(
                        f"control plane at {self.url}: {exc or type(exc).__name__}"
                    ) from exc
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        return status, decode_answer(status, raw or b"")


def decode_answer(status: int, raw: bytes) -> dict[str, Any]:
    """An answer's JSON body (a non-object wrapped as ``{"value": …}``, unparsable as ``{}``), or
    :class:`ControlRefused` for a status >= 300 (both clients, blocking and asyncio)."""
    payload: dict[str, Any] = {}
    if raw:
        with contextlib.suppress(ValueError):  # orjson: a watch answer is ~20 KB, parsed 1.7x faster
            loaded = orjson.loads(raw)
            payload = loaded if isinstance(loaded, dict) else {"value": loaded}
    if status >= 300:
        message = str(payload.get("error") or f"HTTP {status}")
        raise ControlRefused(status, message, payload)
    return payload


def operator_client(state: MeshState, timeout: float = 30.0) -> ControlClient | None:
    """A client with the operator certificate for the running control plane, or None if none runs."""
    info = read_control_info(state.path)
    if info is None:
        return None
    cert, key, bundle = state.ensure_operator_cert()
    return ControlClient(info.url, state.trust_domain, bundle.read_bytes(), cert, key, timeout=timeout)
