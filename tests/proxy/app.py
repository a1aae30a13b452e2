"""A test app behind the sidecar (run as its own process): records what reaches it.

Endpoints (all echo what they saw, as JSON):

- ``/__stats``             requests seen so far (by path) — the tests call it directly
- ``/__release``           lets the SSE stream send its next event
- ``/sse?n=N``             N server-sent events; after each one it waits for ``/__release``
- ``/v1/chat/completions`` a tiny OpenAI-compatible chat answer (``stream: true`` → SSE)
- ``/v1/models``           a model list
- ``/big?mb=N``          N MiB of body (``big_sent`` in /__stats counts what was written)
- ``/slow?s=S``           answers after S seconds
- ``/ws``                  answers ``Upgrade: websocket`` with 101, then echoes raw bytes
- anything else            JSON echo of method, path, headers, body length and sha256
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SEEN: list[str] = []
LOCK = threading.Lock()
RELEASE = threading.Semaphore(0)
BIG_SENT = [0]  # bytes of /big written so far (blocks when nobody reads: backpressure)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json(self, status: int, doc: Any) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/__stats":
            with LOCK:
                self._json(200, {"count": len(SEEN), "paths": list(SEEN), "big_sent": BIG_SENT[0]})
            return
        if url.path == "/__release":
            RELEASE.release()
            self._json(200, {"released": True})
            return
        with LOCK:
            SEEN.append(url.path)
        body = self._body()
        if url.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            self.send_response(101)
            self.send_header("Connection", "Upgrade")
            self.send_header("Upgrade", "websocket")
            self.end_headers()
            self.wfile.flush()
            while True:
                data = self.connection.recv(65536)
                if not data:
                    break
                self.connection.sendall(data)
            self.close_connection = True
            return
        if url.path == "/sse":
            n = int(parse_qs(url.query).get("n", ["3"])[0])
            self._sse([f"data: token-{i}\n\n".encode() for i in range(n)], wait=True)
            return
        if url.path == "/big":
            total = int(parse_qs(url.query).get("mb", ["100"])[0]) * 1024 * 1024
            block = b"b" * 65536
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(total))
            self.end_headers()
            try:
                for _ in range(total // len(block)):
                    self.wfile.write(block)
                    with LOCK:
                        BIG_SENT[0] += len(block)
            except OSError:
                self.close_connection = True
            return
        if url.path == "/slow":
            time.sleep(float(parse_qs(url.query).get("s", ["3"])[0]))
            self._json(200, {"slow": True})
            return
        if url.path == "/v1/models":
            self._json(
                200, {"object": "list", "data": [{"id": "tiny", "object": "model", "owned_by": "test"}]}
            )
            return
        if url.path == "/v1/chat/completions":
            req = json.loads(body or b"{}")
            words = ["Hello", " from", " the", " mesh"]
            if req.get("stream"):
                events = []
                for w in words:
                    chunk = {
                        "id": "c1",
                        "object": "chat.completion.chunk",
                        "created": 1,
                        "model": req.get("model", "tiny"),
                        "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}],
                    }
                    events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                events.append(b"data: [DONE]\n\n")
                self._sse(events, wait=False)
                return
            self._json(
                200,
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "created": 1,
                    "model": req.get("model", "tiny"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(words)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
                },
            )
            return
        status = int(parse_qs(url.query).get("status", ["200"])[0])
        self._json(
            status,
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body_len": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(),
            },
        )

    def _sse(self, events: list[bytes], wait: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i, ev in enumerate(events):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
            self.wfile.flush()
            if wait and i < len(events) - 1 and not RELEASE.acquire(timeout=20):
                # never released: the test did not see this event in time (someone buffered)
                late = b"data: not-released\n\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(late), late))
                break
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    print("listening", flush=True)
    try:
        server.serve_forever()
    finally:
        time.sleep(0)


if __name__ == "__main__":
    main()
