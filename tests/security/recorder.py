"""A model-server stand-in that records what it received, for the data-plane attack tests.

Run: ``python -m tests.security.recorder --port P --log FILE``. It reads requests the way
Python apps do (uvicorn/Starlette-style): the path percent-decoded before routing, a JSON body
parsed with ``json.loads(bytes)`` whatever the ``Content-Type`` (UTF-16/32 included), and
writes one JSON line per request to FILE: method, target, decoded route, header fields as
received, the body (latin-1) and every string of the parsed JSON document.

Routes (on the decoded path) that misbehave on purpose:

- ``/reset``: close the connection without answering (a crash mid-request);
- ``/switch``: answer ``101`` to a request that asked for no upgrade, then raw bytes;
- ``/ws``: answer an Upgrade with ``101`` switching to ``h2c`` instead of ``websocket``;
- ``/v1/responses``: a Responses API event stream whose ``output_text.delta`` events split an
  e-mail address; ``/v1/chat/completions`` with ``"stream": true``: a tool call whose
  ``function.arguments`` chunks split one;
- ``/api/chat``: an Ollama NDJSON stream whose ``message.content`` lines split one;
- ``/escaped``: a JSON answer holding an ``\\u0040``-escaped e-mail address, sent as
  ``text/plain``;
- anything else: ``200 {"ok": true}``.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

__all__ = ["SPLIT_EMAIL", "main"]

SPLIT_EMAIL = "jane.doe@example.com"
_LOCK = threading.Lock()


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in [k, *_strings(v)]]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def _sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def responses_stream() -> bytes:
    pieces = ["write to jane.d", "oe@exa", "mple.com today"]
    events: list[dict[str, Any]] = [
        {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": p,
        }
        for p in pieces
    ]
    return _sse(events)


def tool_call_stream() -> bytes:
    pieces = ['{"to": "jane.d', "oe@exa", 'mple.com"}']
    events: list[dict[str, Any]] = [
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"name": "mail", "arguments": p}}]},
                }
            ],
        }
        for p in pieces
    ]
    return _sse(events)


def ollama_stream() -> bytes:
    pieces = ["write to jane.d", "oe@exa", "mple.com today"]
    lines = [{"model": "m", "message": {"role": "assistant", "content": p}, "done": False} for p in pieces]
    return b"".join(json.dumps(line).encode() + b"\n" for line in [*lines, {"done": True}])


class RecordingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    log_path = ""

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._body()
        route = unquote(self.path.split("?", 1)[0])
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        record = {
            "method": self.command,
            "target": self.path,
            "route": route,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("latin-1"),
            "strings": _strings(parsed),
        }
        with _LOCK, open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if route == "/reset":
            self.close_connection = True
            return
        if route in ("/switch", "/ws"):  # an unasked-for 101, or one to another protocol
            self.close_connection = True
            protocol = b"websocket" if route == "/switch" else b"h2c"
            self.wfile.write(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n" % protocol
            )
            self.wfile.write(b"RAW " + SPLIT_EMAIL.encode())
            return
        if route == "/api/chat":
            self._reply(ollama_stream(), "application/x-ndjson")
            return
        if route == "/escaped":
            self._reply(b'{"answer": "mail jane.doe\\u0040example.com"}', "text/plain")
            return
        stream = isinstance(parsed, dict) and parsed.get("stream") is True
        if route == "/v1/responses" and stream:
            self._reply(responses_stream(), "text/event-stream")
        elif route == "/v1/chat/completions" and stream:
            self._reply(tool_call_stream(), "text/event-stream")
        else:
            self._reply(b'{"ok": true}', "application/json")

    def _reply(self, data: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def do_HEAD(self) -> None:  # health checks
        self._reply(b"", "text/plain")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    RecordingHandler.log_path = args.log
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", args.port), RecordingHandler).serve_forever()


if __name__ == "__main__":
    main()
