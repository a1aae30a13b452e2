"""The control plane: CA over HTTPS, the config API, the config watch, and the audit sink.

Why stdlib ``ThreadingHTTPServer`` + ``ssl`` and not asyncio: the control plane is not on the
request path; its load is a few dozen sidecars holding one long-poll each plus rare CLI calls.
A thread per connection keeps every handler a plain blocking function over SQLite and the
identity service (both synchronous and thread-safe), with no event loop to share or starve, and
the whole server stays small. The TLS handshake runs in the connection's thread (never in the
accept loop), so a slow or hostile client cannot stall the others.

The decisions are :class:`~meshward.control.service.ControlService`'s; this module is the
transport (TLS, HTTP, routing, who the caller is) and the lifecycle (the control plane's own
SVID, renewed at half-life; ``<state>/control.json``).

The server's TLS context follows the CA on disk: before each accept, and every
``TLS_CHECK_SECONDS`` otherwise, the trust bundle and issuing chain are compared with the ones the
context was built from (two ``stat`` calls when nothing changed). After ``meshward ca rotate``
(or the end of a retired root's overlap) the control plane mints its own SVID from the current
intermediate and builds a new context for NEW connections; open ones keep theirs. Watching
sidecars are then pushed the new bundle (see :mod:`meshward.control.service`).

Endpoints (JSON; ``who`` = what the caller must prove):

=========================== =================================================== ===============
``POST /v1/identity/sign``  CSR + join token → X.509-SVID chain + bundle        join token
``POST /v1/identity/renew`` CSR → new SVID for the same identity                its SVID
``GET  /v1/watch``          ``workload=NS/NAME&have=DIGEST`` → snapshot         that workload
                            (``&ack=GEN&sidecar=ID``: the last one's ACK)
``POST /v1/sidecars/...``   ``register`` / ``unregister`` inbound, ``ack``       that workload
``POST /v1/audit``          a batch of audit records                            any mesh SVID
``GET  /v1/secrets/value``  ``workload=NS/NAME&name=S`` → an egress credential   that workload,
                                                                                if egress allows
``POST /v1/config/apply``   YAML text (``dry_run``) → changes, new generation   operator
``GET  /v1/config/get``     ``kind``, ``name``, ``namespace`` → documents        operator
``POST /v1/config/delete``  ``resources`` → new generation without them        operator
``GET  /v1/config/diff``    ``from``, ``to`` → changes between two generations  operator
``GET  /v1/config/history`` generations                                         operator
``POST /v1/config/rollback`` ``generation`` → new generation equal to it        operator
``GET  /v1/status``         generation, sidecars, ACK/NACK                      operator
``/v1/detection/…``          reports in; alerts, quarantines out (detection_api)  see there
``GET  /v1/endpoints``      registered sidecar endpoints, valid or not          operator
``POST /v1/endpoints/...``  ``remove``: ``sidecar`` → registration forgotten     operator
``GET  /healthz``           liveness                                            nobody
=========================== =================================================== ===============

Bounds (see :mod:`meshward.control.limits`): JSON bodies and CSRs are capped, refusals per
source are rate-limited, a client has ``HEADER_TIMEOUT`` seconds per read of its TLS handshake,
request head and body, and connections are capped in total and per source address. A caller
whose certificate serial is revoked is refused like one without a certificate.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from meshward.audit.control import ControlAudit
from meshward.config.store import ConfigStore
from meshward.control.detection_api import detection_api
from meshward.control.limits import (
    HEADER_TIMEOUT,
    MAX_AUDIT_BODY,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_SOURCE,
    MAX_JSON_BODY,
)
from meshward.control.service import ApiError, ControlService, RawJson
from meshward.identity.keys import write_public
from meshward.identity.renewal import renewal_due
from meshward.identity.spiffe import SpiffeId
from meshward.identity.state import MeshState
from meshward.rollout.controller import RolloutController
from meshward.tls.contexts import server_context_files
from meshward.tls.control import control_id
from meshward.tls.peer import peer_serial, peer_spiffe_id

__all__ = ["DEFAULT_LISTEN", "TLS_CHECK_SECONDS", "ControlPlane"]

log = logging.getLogger(__name__)

DEFAULT_LISTEN = ("127.0.0.1", 15012)
CONTROL_CERT_TTL = dt.timedelta(hours=24)
TLS_CHECK_SECONDS = 2.0


class ControlPlane:
    """One control plane for one mesh state directory, served over HTTPS with mTLS."""

    def __init__(
        self,
        state: MeshState,
        listen: tuple[str, int] = DEFAULT_LISTEN,
        header_timeout: float = HEADER_TIMEOUT,
    ) -> None:
        self.state = state
        self.header_timeout = header_timeout  # per read: TLS handshake, request head, body
        self.service = ControlService(state)
        self.rollouts = RolloutController(self.service)  # automated canary analysis
        self.trust_domain = state.trust_domain
        self._stop = threading.Event()
        self._cert_dir = state.path / "control"
        self._tls_lock = threading.Lock()
        self._trust = self.service.identity.trust_material()
        self._cert_not_after = self._mint_server_cert()
        self._ssl = self._context()
        self._server = _Server(listen, _Handler, self)
        host, port = self._server.server_address[:2]
        self.url = f"https://{host!s}:{port}"

    @property
    def audit(self) -> ControlAudit:
        return self.service.audit

    @property
    def store(self) -> ConfigStore:
        return self.service.store

    # -- lifecycle -------------------------------------------------------------------------------
    def _mint_server_cert(self) -> dt.datetime:
        control = control_id(self.trust_domain)
        return self.service.identity.mint(control, self._cert_dir, CONTROL_CERT_TTL, system=True).not_after

    def _context(self) -> ssl.SSLContext:
        return server_context_files(
            self._cert_dir / "cert.pem",
            self._cert_dir / "key.pem",
            self._cert_dir / "bundle.pem",
            require_client_cert=False,  # a joining sidecar has no SVID yet (see meshward.tls.contexts)
        )

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The context new connections are wrapped with."""
        return self._ssl

    def refresh_tls(self) -> bool:
        """Follow a CA rotation and our own half-life; True if new connections get a new context.

        A changed bundle or issuing chain (``ca rotate``, an ended root overlap) or a certificate
        past half-life: a new SVID from the current intermediate, a new context built from it and
        the current bundle, and every watching sidecar is pushed the bundle.
        """
        with self._tls_lock:
            trust = self.service.identity.trust_material()
            rotated = trust != self._trust
            not_after = self._cert_not_after
            if not rotated and not renewal_due(not_after - CONTROL_CERT_TTL, not_after):
                return False
            self._cert_not_after = self._mint_server_cert()
            self._ssl = self._context()
            self._trust = trust  # read before the mint: a rotation in between is seen next time
        if rotated:
            self.service.trust_changed()
        return True

    def _refresh_tls_safely(self) -> None:
        try:
            self.refresh_tls()
        except Exception as exc:  # a CA being replaced or damaged: keep serving with the last context
            log.warning("control plane TLS not refreshed (kept the current one): %s", exc)

    def _renew_loop(self) -> None:
        """Our SVID and trust bundle kept current even while no connection arrives."""
        while not self._stop.wait(TLS_CHECK_SECONDS):
            self._refresh_tls_safely()
            try:
                self.service.check_revocations()
            except Exception as exc:  # the ledger busy or damaged: the current list stays
                log.warning("revoked serials not re-read: %s", exc)

    def write_info(self) -> None:
        """``<state>/control.json``: how the CLI and ``meshward up`` find this control plane."""
        doc = {"url": self.url, "pid": os.getpid(), "started": time.time()}
        write_public(self.state.path / "control.json", (json.dumps(doc) + "\n").encode())

    def start(self) -> None:
        """Serve in background threads; :meth:`close` stops."""
        self.write_info()
        self.service.announce()
        self.rollouts.start()
        for target in (self._server.serve_forever, self._renew_loop):
            threading.Thread(target=target, name=f"control-{target.__name__}", daemon=True).start()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self.service.closing = True
        self.rollouts.close()
        self._server.shutdown()
        self.service.close()
        self._server.server_close()
        info = self.state.path / "control.json"
        with contextlib.suppress(OSError, ValueError):
            if json.loads(info.read_text()).get("pid") == os.getpid():
                info.unlink()


def rollout_call(call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A rollout API call: an unknown route is 404, an impossible action 409."""
    try:
        return call()
    except LookupError as exc:
        raise ApiError(404, str(exc.args[0]) if exc.args else "not found") from None
    except ValueError as exc:
        raise ApiError(409, str(exc)) from None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], plane: ControlPlane):
        self.plane = plane
        # One thread per connection, so a cap on connections: past it, new ones are closed at
        # once instead of exhausting the process (each sidecar holds one or two).
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._per_source: dict[str, int] = {}
        self._per_source_lock = threading.Lock()
        super().__init__(address, handler)

    def _take_source(self, source: str) -> bool:
        with self._per_source_lock:
            n = self._per_source.get(source, 0)
            if n >= MAX_CONNECTIONS_PER_SOURCE:
                return False
            self._per_source[source] = n + 1
            return True

    def _give_source(self, source: str) -> None:
        with self._per_source_lock:
            n = self._per_source.pop(source, 1) - 1
            if n > 0:
                self._per_source[source] = n

    def process_request(self, request: Any, client_address: Any) -> None:
        source = str(client_address[0])
        if not self._take_source(source):
            self.shutdown_request(request)
            return
        if not self._slots.acquire(blocking=False):
            self._give_source(source)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            self._give_source(source)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()
            self._give_source(str(client_address[0]))

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        self.plane._refresh_tls_safely()  # a CA rotated a moment ago applies to this connection
        # The handshake happens in the connection's own thread (see _Handler.setup).
        return self.plane.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up mid-request is not the control plane's problem to print


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "meshward-control"
    sys_version = ""
    timeout = HEADER_TIMEOUT  # per read of a request head or body: a slow client is cut off
    server: _Server
    _raw = b""

    def setup(self) -> None:
        # Headers and body go out as separate writes: without TCP_NODELAY, Nagle + delayed ACK
        # hold the second one for ~40 ms, on every watch push.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request.settimeout(self.plane.header_timeout)
        try:
            self.request.do_handshake()
        except (OSError, ssl.SSLError):
            self.close_connection = True
            raise
        super().setup()
        self.request.settimeout(self.plane.header_timeout)  # per read of a request head or body

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no request log: paths carry no secrets but the CLI's output must stay clean

    @property
    def plane(self) -> ControlPlane:
        return self.server.plane

    @property
    def service(self) -> ControlService:
        return self.server.plane.service

    def _peer(self) -> SpiffeId:
        assert isinstance(self.request, ssl.SSLSocket)
        peer = peer_spiffe_id(self.request)
        if peer is None:
            raise ApiError(401, "this endpoint needs a client certificate (an X.509-SVID of this mesh)")
        if peer.trust_domain != self.plane.trust_domain:
            raise ApiError(403, f"{peer.uri} is not in trust domain {self.plane.trust_domain}")
        if peer_serial(self.request) in self.service.revoked:
            raise ApiError(403, f"the certificate {peer.uri} presented is revoked")
        return peer

    def _operator(self) -> str:
        peer = self._peer()
        if peer != self.service.operator:
            raise ApiError(
                403, f"{peer.uri} is not the operator; only {self.service.operator.uri} may do this"
            )
        # The actor recorded is the verified certificate's identity; the user name the CLI sends
        # is a claim, kept as a printable label next to it, never instead of it.
        user = "".join(c for c in self.headers.get("X-Meshward-User", "")[:64] if c.isprintable())
        return f"{peer.uri} (user {user!r})" if user else peer.uri

    def _send(self, status: int, payload: dict[str, Any] | RawJson | None) -> None:
        if isinstance(payload, RawJson):
            data = bytes(payload)
        else:
            data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self, path: str) -> dict[str, Any]:
        limit = MAX_AUDIT_BODY if path == "/v1/audit" else MAX_JSON_BODY
        text = self.headers.get("Content-Length") or "0"
        length = int(text) if text.isascii() and text.isdigit() and len(text) < 16 else -1
        if not 0 <= length <= limit:
            self.close_connection = True
            raise ApiError(413, f"request body must have a Content-Length up to {limit} bytes")
        self._raw = self.rfile.read(length) if length else b""
        if self.headers.get("Content-Type", "").startswith("application/x-ndjson"):
            return {}
        raw = self._raw or b"{}"
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiError(400, "request body must be JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        return body

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            body = self._body(url.path) if method == "POST" else {}
            payload = self._route(method, url.path, body, query)
            self._send(200 if payload is not None else 204, payload)
        except ApiError as exc:
            self._send(exc.status, {"error": str(exc), **exc.extra})
        except (ConnectionError, TimeoutError, ssl.SSLError):
            self.close_connection = True
        except Exception as exc:  # a bug here must not kill the connection thread silently
            self._send(500, {"error": f"control plane error: {type(exc).__name__}: {exc}"})

    def _route(
        self, method: str, path: str, body: dict[str, Any], query: dict[str, str]
    ) -> dict[str, Any] | RawJson | None:
        plane = self.service
        match (method, path):
            case ("GET", "/healthz"):
                return {"ok": True}
            case ("POST", "/v1/identity/sign"):
                return plane.sign(body, self.client_address[0])
            case ("POST", "/v1/identity/renew"):
                assert isinstance(self.request, ssl.SSLSocket)
                return plane.renew(body, self._peer(), peer_serial(self.request), self.client_address[0])
            case ("GET", "/v1/watch"):
                return plane.watch(query, self._peer())
            case ("POST", "/v1/sidecars/register"):
                return plane.register(body, self._peer())
            case ("POST", "/v1/sidecars/unregister"):
                return plane.unregister(body, self._peer())
            case ("POST", "/v1/sidecars/ack"):
                return plane.ack(body, self._peer())
            case ("POST", "/v1/audit"):
                return plane.ingest_audit(self._raw, self._peer())
            case ("GET", "/v1/secrets/value"):
                return plane.secret(query, self._peer())
            case ("POST", "/v1/config/apply"):
                return plane.apply(body, self._operator())
            case ("POST", "/v1/config/rollback"):
                return plane.rollback(body, self._operator())
            case ("GET", "/v1/config/get"):
                self._operator()
                return plane.get(query)
            case ("POST", "/v1/config/delete"):
                return plane.delete(body, self._operator())
            case ("GET", "/v1/config/diff"):
                self._operator()
                return plane.compare(query)
            case ("GET", "/v1/config/history"):
                self._operator()
                return plane.history()
            case ("GET", "/v1/status"):
                self._operator()
                return plane.status()
            case ("GET", "/v1/rollout/status"):
                self._operator()
                return rollout_call(lambda: self.plane.rollouts.status(query.get("service", "")))
            case (
                "POST",
                "/v1/rollout/promote" | "/v1/rollout/pause" | "/v1/rollout/resume" | "/v1/rollout/abort",
            ):
                who = self._operator()
                action = path.rsplit("/", 1)[1]
                return rollout_call(
                    lambda: self.plane.rollouts.command(str(body.get("service", "")), action, who)
                )
            case (_, p) if p.startswith(("/v1/detection/", "/v1/alerts", "/v1/quarantines")):
                return detection_api(plane.detection, method, p, body, query, self._peer, self._operator)
            case ("GET", "/v1/endpoints"):
                self._operator()
                return plane.endpoints()
            case ("POST", "/v1/endpoints/remove"):
                self._operator()
                return plane.remove_endpoint(body)
        raise ApiError(404, f"no endpoint {method} {path}")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")
