"""A steady caller of the chat service, for the rollout example: ``GET /stats`` says who answered.

Run (inside the mesh, ``HTTP_PROXY`` set by ``meshward up``)::

    python -m examples.rollout.caller --port 8090 [--rate 20] [--users 50]

A background thread sends ``--rate`` chat completions per second to ``http://chat.llm`` through
the sidecar, as one of ``--users`` end users (header ``X-User``: the route's sticky key).
``GET /stats`` answers ``{"sent", "ok", "failed", "by_instance": {...}, "leaked"}`` (answers that
still contained an email address after the mesh's DLP); ``POST /stats/reset`` zeroes them.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["main"]

_LOCK = threading.Lock()
STATS: dict[str, Any] = {}


def reset() -> None:
    with _LOCK:
        STATS.clear()
        STATS.update(sent=0, ok=0, failed=0, leaked=0, by_instance={})


def call_loop(rate: float, users: int, stop: threading.Event) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler())  # HTTP_PROXY: the sidecar
    n = 0
    while not stop.wait(1.0 / rate):
        n += 1
        body = {"model": "chat", "messages": [{"role": "user", "content": f"question {n % 7}"}]}
        req = urllib.request.Request(
            "http://chat.llm/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "X-User": f"user-{n % users}"},
        )
        try:
            with opener.open(req, timeout=10) as resp:
                text = resp.read().decode()
                instance = resp.headers.get("X-Model-Instance", "?")
                ok = True
        except Exception:
            ok, text, instance = False, "", "-"
        with _LOCK:
            STATS["sent"] += 1
            STATS["ok" if ok else "failed"] += 1
            by = STATS["by_instance"]
            by[instance] = by.get(instance, 0) + 1
            STATS["leaked"] += "@example.com" in text


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status: int, doc: Any) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {"ok": True})
        elif self.path == "/stats":
            with _LOCK:
                self._send(200, json.loads(json.dumps(STATS)))
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path == "/stats/reset":
            reset()
            self._send(200, {"ok": True})
        else:
            self._send(404, {"error": "not found"})

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--users", type=int, default=50, help="distinct end users (X-User)")
    args = parser.parse_args(argv)
    reset()
    stop = threading.Event()
    threading.Thread(
        target=call_loop, args=(max(0.1, args.rate), max(1, args.users), stop), daemon=True
    ).start()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"rollout caller on http://{args.host}:{args.port} ({args.rate}/s)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()


if __name__ == "__main__":
    main()
