"""Real local receivers for alert delivery tests: an HTTP webhook and an RFC 6587 syslog server."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["SyslogReceiver", "WebhookReceiver"]


class WebhookReceiver:
    """Collects every POSTed JSON body with its path."""

    def __init__(self, port: int = 0) -> None:
        received: list[tuple[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, path: str) -> list[Any]:
        return [body for p, body in list(self.received) if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SyslogReceiver:
    """A TCP syslog server; keeps the raw bytes received."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.port = int(self.sock.getsockname()[1])
        self.data = bytearray()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        conn.settimeout(0.5)
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                self.data += chunk

    def text(self) -> str:
        return bytes(self.data).decode("utf-8", "replace")

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
