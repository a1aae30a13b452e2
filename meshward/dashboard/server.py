"""The dashboard's HTTP server: loopback only, login required, strict browser security headers.

Plain HTTP on 127.0.0.1 (no TLS): the socket never leaves the machine, like Jupyter's default.
It is a server of its own (stdlib ``ThreadingHTTPServer``), apart from the control plane's API,
and it only reads the mesh.

- Every response carries a Content-Security-Policy that allows nothing but this origin (no
  inline script or style, no other host), ``X-Frame-Options: DENY``, ``nosniff``, a referrer
  only to this origin, no caching.
- The Host header must name this loopback address (a DNS-rebinding page cannot talk to us).
- ``GET /login?token=T`` redeems a one-time login token for a session cookie (HttpOnly,
  SameSite=Strict) and redirects to the graph; anything else without a session is a 401.
- Every POST must carry the session's CSRF token (form field ``csrf`` or ``X-CSRF-Token``) and,
  when the browser sends one, an Origin of this server.
- ``/api/tap`` is the live tap as Server-Sent Events (at most ``MAX_TAP_STREAMS`` at once); a
  browser that reads slowly loses the oldest events (bounded queue), it never slows the mesh.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Sequence
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from meshward.dashboard.auth import SESSION_COOKIE, LoginTokens, Session, Sessions
from meshward.dashboard.pages import PAGES, page
from meshward.dashboard.render import esc, layout
from meshward.dashboard.tap import TapFilter, TapWatcher
from meshward.dashboard.view import MeshView

__all__ = ["CSP", "DashboardServer"]

log = logging.getLogger("meshward.dashboard")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),  # (no-referrer would make form POSTs say Origin: null)
    ("Cache-Control", "no-store"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
MAX_TAP_STREAMS = 16
MAX_FORM = 4096
KEEPALIVE_SECONDS = 15.0


class DashboardServer:
    """One mesh's dashboard on ``listen`` (127.0.0.1 only)."""

    def __init__(self, state_dir: Path, port: int = 0) -> None:
        self.view = MeshView(state_dir)
        self.tokens = LoginTokens(state_dir / "dashboard")
        self.sessions = Sessions()
        self.tap_slots = threading.BoundedSemaphore(MAX_TAP_STREAMS)
        self.httpd = _Server(("127.0.0.1", port), _Handler, self)
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        self.cookie = f"{SESSION_COOKIE}_{self.port}"  # cookies are per host, not per port
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="dashboard", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], app: DashboardServer):
        self.app = app
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a browser that went away mid-response


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "meshward-dashboard"
    sys_version = ""
    timeout = 30
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the login token travels in a query string: never log request lines

    @property
    def app(self) -> DashboardServer:
        return self.server.app

    # -- responses -------------------------------------------------------------------------------
    def _head(
        self, status: int, ctype: str, length: int | None, extra: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.send_response(status)
        for name, value in SECURITY_HEADERS:
            self.send_header(name, value)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()

    def _send(
        self,
        status: int,
        body: bytes,
        ctype: str = "text/html; charset=utf-8",
        extra: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._head(status, ctype, len(body), list(extra))
        if self.command != "HEAD":
            self.wfile.write(body)

    def _message(self, status: int, title: str, text: str, extra: Sequence[tuple[str, str]] = ()) -> None:
        body = (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<link rel="stylesheet" href="/static/app.css"></head><body class="message"><main>'
            f"<h1>{esc(title)}</h1><p>{esc(text)}</p></main></body></html>"
        )
        self._send(status, body.encode(), extra=list(extra))

    def _redirect(self, where: str, extra: Sequence[tuple[str, str]] = ()) -> None:
        self._send(303, b"", "text/plain", [("Location", where), *extra])

    # -- who is asking ---------------------------------------------------------------------------
    def _session(self) -> tuple[str, Session] | None:
        raw = self.headers.get("Cookie")
        if not raw:
            return None
        try:
            jar = SimpleCookie(raw)
        except CookieError:
            return None
        morsel = jar.get(self.app.cookie)
        if morsel is None:
            return None
        session = self.app.sessions.get(morsel.value)
        return None if session is None else (morsel.value, session)

    def _host_ok(self) -> bool:
        return self.headers.get("Host", "") in self.app.hosts

    # -- methods ---------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._serve(post=False)

    def do_HEAD(self) -> None:
        self._serve(post=False)

    def do_POST(self) -> None:
        self._serve(post=True)

    def _serve(self, post: bool) -> None:
        try:
            if not self._host_ok():
                self.close_connection = True
                self._message(421, "Wrong host", "This dashboard answers on its loopback address only.")
                return
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/healthz" and not post:
                self._send(200, b"ok\n", "text/plain")
            elif url.path == "/login" and not post:
                self._login(query.get("token", ""))
            elif url.path.startswith("/static/") and url.path[8:] in STATIC and not post:
                name = url.path[8:]  # public code and styles: the message pages use them too
                self._send(
                    200, (resources.files("meshward.dashboard") / "static" / name).read_bytes(), STATIC[name]
                )
            elif url.path == "/favicon.ico" and not post:
                self._redirect("/static/favicon.svg")
            elif url.path == "/logged-out":
                self._message(200, "Logged out", "Run `meshward dashboard` for a new login link.")
            else:
                found = self._session()
                if found is None:
                    self._message(401, "Login required", "Open the link `meshward dashboard` prints.")
                elif post:
                    self._post(url.path, *found)
                else:
                    self._get(url.path, query, found[1])
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # a page bug must show as a 500, not a dropped connection
            log.exception("dashboard: %s failed", self.path.split("?")[0])
            with contextlib.suppress(OSError):
                self._message(500, "Dashboard error", f"{type(exc).__name__}: {exc}")

    def _login(self, token: str) -> None:
        if not token or not self.app.tokens.redeem(token):
            self._message(
                403, "Login refused", "This login link is wrong, used or expired. Run `meshward dashboard`."
            )
            return
        sid, _ = self.app.sessions.create()
        cookie = f"{self.app.cookie}={sid}; Path=/; HttpOnly; SameSite=Strict"
        self._redirect("/graph", [("Set-Cookie", cookie)])

    def _get(self, path: str, query: dict[str, str], session: Session) -> None:
        if path == "/":
            self._redirect("/graph")
        elif path == "/api/tap":
            self._tap(query)
        else:
            found = page(path.strip("/"))
            if found is None:
                self._message(404, "Not found", "No such page.")
                return
            body = found.render(self.app.view, query)
            nav = [(p.slug, p.title) for p in PAGES]
            mesh = f"{self.app.view.trust_domain} · {self.app.url}"
            self._send(200, layout(found.title, found.slug, nav, body, session.csrf, mesh))

    def _post(self, path: str, sid: str, session: Session) -> None:
        form = self._form()  # read first: an unread body would be parsed as the next request
        origin = self.headers.get("Origin")
        if origin is not None and origin.removeprefix("http://") not in self.app.hosts:
            self._message(403, "Refused", "Cross-origin request.")
            return
        presented = self.headers.get("X-CSRF-Token") or form.get("csrf")
        if not self.app.sessions.csrf_ok(session, presented):
            self._message(403, "Refused", "Missing or wrong CSRF token.")
            return
        if path == "/logout":
            self.app.sessions.end(sid)
            expired = f"{self.app.cookie}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
            self._redirect("/logged-out", [("Set-Cookie", expired)])
        else:
            self._message(404, "Not found", "No such action.")

    def _form(self) -> dict[str, str]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_FORM:
            self.close_connection = True
            return {}
        raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        return {k: v[0] for k, v in parse_qs(raw).items()}

    # -- the live tap ----------------------------------------------------------------------------
    def _tap(self, query: dict[str, str]) -> None:
        if not self.app.tap_slots.acquire(blocking=False):
            self._message(503, "Busy", "Too many live tap streams are open.")
            return
        relay = self.app.view.relay
        watcher = TapWatcher(
            TapFilter(
                query.get("source", ""),
                query.get("destination", ""),
                query.get("status", ""),
                query.get("decision", ""),
                self.app.view.trust_domain,
            )
        )
        relay.subscribe(watcher)
        try:
            self.close_connection = True
            self._head(200, "text/event-stream", None, [("Connection", "close")])
            self.request.settimeout(10)  # a browser that stops reading is dropped, never waited for
            relay.wait_connected(5.0)
            self.wfile.write(b": connected\n\n")
            self.wfile.flush()
            dropped = 0
            while True:
                events = watcher.take(KEEPALIVE_SECONDS)
                chunks = [b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events]
                if watcher.dropped != dropped:
                    dropped = watcher.dropped
                    chunks.append(b"event: dropped\ndata: " + str(dropped).encode() + b"\n\n")
                self.wfile.write(b"".join(chunks) or b": keepalive\n\n")
                self.wfile.flush()
        except (OSError, ValueError):
            pass
        finally:
            relay.unsubscribe(watcher)
            self.app.tap_slots.release()
