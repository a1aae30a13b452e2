"""Quickstart "webapp": a tiny web service that asks the model, through the mesh.

Standard library only, and no mesh code: it calls ``http://tiny-model.ml/v1/chat/completions``
in plain HTTP and ``urllib`` sends it to ``$HTTP_PROXY`` (its sidecar), which opens mutual TLS
to the model's sidecar and checks the model's identity. ``GET /ask?q=TEXT`` returns the model's
answer (or the mesh's refusal, status and all); ``GET /health`` is the readiness probe.

    HTTP_PROXY=http://127.0.0.1:15001 python -m examples.quickstart.webapp --port 8081
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL_URL = os.environ.get("MODEL_URL", "http://tiny-model.ml/v1/chat/completions")


def ask_model(question: str) -> tuple[int, bytes]:
    body = json.dumps({"model": "tiny-echo", "messages": [{"role": "user", "content": question}]}).encode()
    request = urllib.request.Request(
        MODEL_URL, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # honours HTTP_PROXY
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/health":
            self._reply(200, b'{"status": "ok"}')
        elif url.path == "/ask":
            question = urllib.parse.parse_qs(url.query).get("q", ["hello"])[0]
            try:
                status, body = ask_model(question)
            except OSError as exc:
                status, body = 502, json.dumps({"error": f"model unreachable: {exc}"}).encode()
            self._reply(status, body)
        else:
            self._reply(404, json.dumps({"error": f"no route {url.path}"}).encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"webapp listening on 127.0.0.1:{args.port} (proxy: {os.environ.get('HTTP_PROXY')})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
