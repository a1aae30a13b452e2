"""A test model: answers OpenAI-style chat requests with the request headers it received.

    python -m tests.authn.echo_app --port 8080

``POST /v1/chat/completions`` → a chat completion whose ``headers`` field lists what reached the
model (so a test can see the end-user header and that no credential leaked), with a fixed
``usage`` of 3 tokens; ``GET /health`` → 200. Anything else → 404.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status: int, doc: dict[str, object]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(200 if self.path == "/health" else 404, {"ok": self.path == "/health"})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.partition("?")[0] != "/v1/chat/completions":
            self._send(404, {"error": "not found"})
            return
        model = json.loads(raw or b"{}").get("model", "echo")
        self._send(
            200,
            {
                "id": "chatcmpl-echo",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "query": self.path.partition("?")[2],
            },
        )

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
