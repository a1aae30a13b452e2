"""The small HTTP/1.1 layer both example models share (standard library only).

``JsonHandler`` is a ``BaseHTTPRequestHandler`` that speaks HTTP/1.1 with keep-alive: every
response carries ``Content-Length`` or is sent with ``Transfer-Encoding: chunked``; request bodies
may come with either. Subclasses fill ``routes`` with ``(method, path) -> method name`` entries and
``prefix_routes`` with ``(method, path prefix, method name)`` for paths with a variable tail.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["BadRequest", "JsonHandler", "serve"]

MAX_BODY = 8 * 1024 * 1024


class BadRequest(Exception):
    """The client sent something we cannot use (maps to HTTP 400)."""


class JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; we always frame our responses
    # Nagle stays on (head and body are separate writes): turning it off changed the pacing the
    # detection end-to-end test depends on (see the closing note of issue 16); to revisit.
    disable_nagle_algorithm = False
    server_version = "meshward-example/0.1"
    routes: dict[tuple[str, str], str] = {}
    prefix_routes: list[tuple[str, str, str]] = []
    verbose = False

    # -- request ---------------------------------------------------------------------------
    def read_body(self) -> bytes:
        try:
            return self._read_body()
        except ValueError:  # a bad Content-Length or chunk size
            self.close_connection = True  # the framing is lost: do not read another request
            raise BadRequest("malformed request body framing") from None

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        if length > MAX_BODY:
            raise BadRequest("request body too large")
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise BadRequest("request body too large")
            parts.append(self.rfile.read(size))
            self.rfile.readline()  # CRLF after each chunk

    def read_json(self) -> Any:
        body = self.read_body()
        try:
            return json.loads(body or b"{}")
        except ValueError as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from None

    # -- response --------------------------------------------------------------------------
    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        self._headers_sent = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def start_chunked(self, content_type: str) -> None:
        self._headers_sent = True
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def write_chunk(self, data: bytes) -> None:
        """One HTTP chunk, flushed now (so a streaming client sees it immediately)."""
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def error_payload(self, status: int, message: str) -> Any:
        return {"error": message}

    # -- dispatch --------------------------------------------------------------------------
    def _dispatch(self) -> None:
        self._headers_sent = False
        path = self.path.split("?", 1)[0]
        route = self.routes.get((self.command, path))
        if route is None:
            for method, prefix, handler in self.prefix_routes:
                if method == self.command and path.startswith(prefix):
                    route = handler
                    break
        if route is None:
            known = {p for (_, p) in self.routes} | {p for (_, p, _) in self.prefix_routes}
            status = 405 if path in known else 404
            self.read_body()  # keep the connection usable
            self.send_json(status, self.error_payload(status, f"no route for {self.command} {path}"))
            return
        try:
            getattr(self, route)()
        except BadRequest as exc:
            self.send_json(400, self.error_payload(400, str(exc)))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # our bug: answer 500 (if nothing was sent yet) rather than hang up
            self.close_connection = True
            sys.stderr.write(f"internal error on {self.command} {path}: {type(exc).__name__}\n")
            if not self._headers_sent:
                self.send_json(500, self.error_payload(500, "internal error in the example model"))

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        if self.verbose:  # request line and status only: never payloads
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


def serve(handler: type[JsonHandler], host: str, port: int, banner: str) -> None:
    """Serve until interrupted; prints one ready line (scripts may wait for it)."""
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    actual = server.server_address[1]
    print(f"{banner} listening on http://{host}:{actual}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
