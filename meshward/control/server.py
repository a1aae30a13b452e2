"""The control plane: CA over HTTPS, the config API, the config watch, and the audit sink.

Why stdlib ``ThreadingHTTPServer`` + ``ssl`` and not asyncio: the control plane is not on the
request path; its load is a few dozen sidecars holding one long-poll each plus rare CLI calls.
A thread per connection keeps every handler a plain blocking function over SQLite and the
identity service (both synchronous and thread-safe), with no event loop to share or starve, and
the whole server stays small. The TLS handshake runs in the connection's thread (never in the
accept loop), so a slow or hostile client cannot stall the others.

Distribution is push, not polling: a sidecar's watch is a long-poll that carries the digest of
the last snapshot it received; the handler answers at once when the sidecar's snapshot differs,
else it sleeps on a condition variable that every apply, rollback and endpoint registration
notifies. A change reaches every watching sidecar in one round trip. The digest (rather than a
counter) makes a restarted control plane resume distribution without any shared state.

Endpoints (JSON; ``who`` = what the caller must prove):

=========================== =================================================== ===============
``POST /v1/identity/sign``  CSR + join token → X.509-SVID chain + bundle        join token
``POST /v1/identity/renew`` CSR → new SVID for the same identity                its SVID
``GET  /v1/watch``          ``workload=NS/NAME&have=DIGEST`` → snapshot         that workload
``POST /v1/sidecars/...``   ``register`` / ``unregister`` inbound, ``ack``       that workload
``POST /v1/audit``          a batch of audit records                            any mesh SVID
``POST /v1/config/apply``   YAML text (``dry_run``) → changes, new generation   operator
``GET  /v1/config/get``     ``kind``, ``name``, ``namespace`` → documents        operator
``GET  /v1/config/history`` generations                                         operator
``POST /v1/config/rollback`` ``generation`` → new generation equal to it        operator
``GET  /v1/status``         generation, sidecars, ACK/NACK                      operator
``GET  /healthz``           liveness                                            nobody
=========================== =================================================== ===============
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from meshward.audit.control import ControlAudit
from meshward.audit.store import AuditRejected
from meshward.config.build import build_snapshot, find_workload, mesh_spec, services_table
from meshward.config.store import ConfigStore, SidecarRecord
from meshward.control.operations import ConfigError, apply_text, get_resources, rollback_to
from meshward.control.tls import control_id, peer_serial, peer_spiffe_id, server_context
from meshward.identity.authority import CsrRefused
from meshward.identity.issuance import IdentityService
from meshward.identity.keys import write_public
from meshward.identity.spiffe import SpiffeId
from meshward.identity.state import MeshState
from meshward.resources import Resource
from meshward.resources.mesh import parse_duration

__all__ = ["DEFAULT_LISTEN", "ControlPlane"]

DEFAULT_LISTEN = ("127.0.0.1", 15012)
MAX_BODY = 4 << 20
MAX_WATCH_SECONDS = 30.0
CONTROL_CERT_TTL = dt.timedelta(hours=24)


class _RawJson(bytes):
    """A response body already encoded as JSON."""


class _HttpError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.extra = status, extra


class _View:
    """The current generation's resources and the registered sidecars, cached between changes."""

    def __init__(
        self,
        generation: int,
        resources: list[Resource[Any]],
        sidecars: list[SidecarRecord],
        trust_domain: str,
    ) -> None:
        self.generation, self.resources, self.sidecars = generation, resources, sidecars
        # the same for every workload of this view: computed once, not once per watching sidecar
        self.services = services_table(resources, sidecars, trust_domain)


class ControlPlane:
    """One control plane for one mesh state directory."""

    def __init__(
        self,
        state: MeshState,
        listen: tuple[str, int] = DEFAULT_LISTEN,
    ) -> None:
        self.state = state
        self.trust_domain = state.trust_domain
        self.identity = IdentityService(state)
        self.store = ConfigStore(state.db_path, self.trust_domain)
        # The audit trail: sidecars' batches, our own security events, SIEM forwarding.
        self.audit = ControlAudit(state.path)
        # Our own audit events are written by one worker, off the response path: an apply
        # answers (and its sidecars compile) without waiting for the audit file's fsync.
        self._audit_events: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._audit_worker = threading.Thread(target=self._record_audit, name="control-audit", daemon=True)
        self._audit_worker.start()
        self.operator = state.operator_id
        self._changed = threading.Condition()
        self._version = 0
        self._view: _View | None = None
        self._closing = False
        self._cert_dir = state.path / "control"
        self._cert_not_after = self._mint_server_cert()
        self._ssl = server_context(
            self._cert_dir / "cert.pem", self._cert_dir / "key.pem", self._cert_dir / "bundle.pem"
        )
        self._server = _Server(listen, _Handler, self)
        host, port = self._server.server_address[:2]
        self.url = f"https://{host!s}:{port}"
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------------
    def _mint_server_cert(self) -> dt.datetime:
        issued = self.identity.mint(control_id(self.trust_domain), self._cert_dir, CONTROL_CERT_TTL)
        return issued.not_after

    def _renew_loop(self) -> None:
        while not self._closing:
            with self._changed:
                self._changed.wait(60.0)
            remaining = self._cert_not_after - dt.datetime.now(dt.UTC)
            if not self._closing and remaining < CONTROL_CERT_TTL / 2:
                self._cert_not_after = self._mint_server_cert()
                self._ssl.load_cert_chain(self._cert_dir / "cert.pem", self._cert_dir / "key.pem")
                self._ssl.load_verify_locations(cafile=str(self._cert_dir / "bundle.pem"))

    def write_info(self) -> None:
        """``<state>/control.json``: how the CLI and ``meshward up`` find this control plane."""
        doc = {"url": self.url, "pid": os.getpid(), "started": time.time()}
        write_public(self.state.path / "control.json", (json.dumps(doc) + "\n").encode())

    def _record_audit(self) -> None:
        while (event := self._audit_events.get()) is not None:
            event()

    def _audit(self, event: Callable[[], None]) -> None:
        self._audit_events.put(event)

    def _announce(self) -> None:
        self.write_info()
        self._audit(lambda: self.audit.started(control_id(self.trust_domain).uri))
        self._audit(lambda: self.audit.update_sinks(self._current().resources))

    def start(self) -> None:
        """Serve in background threads (tests, ``meshward up`` in-process use)."""
        self._announce()
        for target in (self._server.serve_forever, self._renew_loop):
            t = threading.Thread(target=target, name=f"control-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)

    def serve_forever(self) -> None:
        self._announce()
        renew = threading.Thread(target=self._renew_loop, name="control-renew", daemon=True)
        renew.start()
        self._server.serve_forever()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        with self._changed:
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._audit(lambda: self.audit.stopped(control_id(self.trust_domain).uri))
        self._audit_events.put(None)
        self._audit_worker.join(10)
        self.audit.close()
        info = self.state.path / "control.json"
        with contextlib.suppress(OSError, ValueError):
            if json.loads(info.read_text()).get("pid") == os.getpid():
                info.unlink()
        self.identity.close()

    # -- the shared view and change notification -------------------------------------------------
    def _current(self) -> _View:
        with self._changed:
            if self._view is None:
                self._view = _View(
                    self.store.generation(), self.store.resources(), self.store.sidecars(), self.trust_domain
                )
            return self._view

    def _notify(self) -> None:
        with self._changed:
            self._view = None
            self._version += 1
            self._changed.notify_all()

    # -- identity --------------------------------------------------------------------------------
    def svid_ttl(self) -> dt.timedelta:
        """The Mesh resource's ``certificateTTL`` (default 1 h)."""
        spec = mesh_spec(self._current().resources, self.trust_domain)
        return dt.timedelta(seconds=parse_duration(spec.certificate_ttl))

    def sign(self, body: dict[str, Any], src_ip: str) -> dict[str, Any]:
        csr, token = _str(body, "csr").encode(), _str(body, "token")
        try:
            issued = self.identity.issue(csr, token, self.svid_ttl())
        except CsrRefused as exc:
            reason = exc.reason
            self._audit(lambda: self.audit.certificate_refused(reason, src_ip=src_ip))
            raise _HttpError(403, exc.reason) from None
        self._audit(
            lambda: self.audit.certificate_issued(
                issued.spiffe_id.uri, issued.serial, issued.not_after, "join-token", src_ip
            )
        )
        return _svid_json(issued.chain_pem, issued.bundle_pem, issued.not_after)

    def renew(self, body: dict[str, Any], peer: SpiffeId, serial: str | None, src_ip: str) -> dict[str, Any]:
        try:
            issued = self.identity.renew(
                _str(body, "csr").encode(), peer, self.svid_ttl(), peer_serial=serial
            )
        except CsrRefused as exc:
            reason = exc.reason
            self._audit(lambda: self.audit.certificate_refused(reason, peer.uri, src_ip))
            raise _HttpError(403, exc.reason) from None
        self._audit(
            lambda: self.audit.certificate_issued(
                issued.spiffe_id.uri, issued.serial, issued.not_after, "renewal", src_ip
            )
        )
        return _svid_json(issued.chain_pem, issued.bundle_pem, issued.not_after)

    # -- sidecars --------------------------------------------------------------------------------
    def _authorize_workload(self, peer: SpiffeId, workload: str) -> tuple[str, str]:
        ns, _, name = workload.partition("/")
        if not ns or not name:
            raise _HttpError(400, f"workload must be NS/NAME, not {workload!r}")
        found = find_workload(self._current().resources, ns, name)
        sa = found.service_account if found is not None else name
        if peer != SpiffeId(self.trust_domain, ns, sa):
            raise _HttpError(403, f"{peer.uri} may not act for workload {workload}")
        return ns, name

    def _sidecar_id(self, body: dict[str, Any], workload: str) -> str:
        sidecar = _str(body, "sidecar")
        if sidecar != workload and not sidecar.startswith(workload + "#"):
            raise _HttpError(400, f"sidecar id {sidecar!r} must be {workload} or {workload}#INSTANCE")
        return sidecar

    def register(self, body: dict[str, Any], peer: SpiffeId) -> dict[str, Any]:
        workload = _str(body, "workload")
        ns, name = self._authorize_workload(peer, workload)
        inbound = _str(body, "inbound")
        host, _, port = inbound.rpartition(":")
        if not host or not port.isdigit():
            raise _HttpError(400, f"inbound must be HOST:PORT, not {inbound!r}")
        record = SidecarRecord(self._sidecar_id(body, workload), ns, name, peer.uri, inbound)
        self.store.register_sidecar(record)
        self._notify()
        return {"registered": record.sidecar}

    def unregister(self, body: dict[str, Any], peer: SpiffeId) -> dict[str, Any]:
        workload = _str(body, "workload")
        self._authorize_workload(peer, workload)
        self.store.unregister_sidecar(self._sidecar_id(body, workload))
        self._notify()
        return {}

    def ack(self, body: dict[str, Any], peer: SpiffeId) -> dict[str, Any]:
        workload = _str(body, "workload")
        self._authorize_workload(peer, workload)
        generation = body.get("generation")
        if not isinstance(generation, int):
            raise _HttpError(400, "generation must be an integer")
        ok = bool(body.get("ok"))
        self.store.record_ack(self._sidecar_id(body, workload), generation, ok, str(body.get("reason", "")))
        return {}

    def watch(self, query: dict[str, str], peer: SpiffeId) -> _RawJson | None:
        """The workload's snapshot once it differs from ``have``; None after ``timeout`` seconds."""
        workload = query.get("workload", "")
        ns, name = self._authorize_workload(peer, workload)
        have = query.get("have", "")
        try:
            timeout = min(float(query.get("timeout", "25")), MAX_WATCH_SECONDS)
        except ValueError:
            raise _HttpError(400, "timeout must be a number of seconds") from None
        deadline = time.monotonic() + timeout
        while not self._closing:
            with self._changed:
                version = self._version
            view = self._current()
            snapshot = build_snapshot(
                view.generation, view.resources, view.sidecars, self.trust_domain, ns, name, view.services
            )
            text = json.dumps(snapshot.to_json(), sort_keys=True)
            digest = hashlib.sha256(text.encode()).hexdigest()
            if digest != have:  # the body is assembled, not dumped again: this runs per sidecar
                return _RawJson(f'{{"digest": "{digest}", "snapshot": {text}}}'.encode())
            with self._changed:
                while self._version == version and not self._closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._changed.wait(left)
        return None

    def ingest_audit(self, batch: bytes, peer: SpiffeId) -> dict[str, Any]:
        try:
            return self.audit.ingest(peer.uri, batch).to_json()
        except AuditRejected as exc:
            extra = exc.to_json()
            extra.pop("error", None)
            raise _HttpError(exc.status, str(exc), **extra) from None

    # -- operator API ----------------------------------------------------------------------------
    def apply(self, body: dict[str, Any], who: str) -> dict[str, Any]:
        text, filename = _str(body, "text"), str(body.get("filename") or "<apply>")
        result = self._config(apply_text, text, filename, bool(body.get("dry_run")), who)
        if result.get("changed"):
            self._notify()
            changes = sum(1 for c in result["changes"] if c["action"] != "unchanged")
            self._audit(lambda: self.audit.config_applied(result["generation"], who, changes))
            self._audit(lambda: self.audit.update_sinks(self._current().resources))
        return result

    def rollback(self, body: dict[str, Any], who: str) -> dict[str, Any]:
        result = self._config(rollback_to, body.get("generation"), who)
        if result.get("changed"):
            self._notify()
            self._audit(lambda: self.audit.config_rolled_back(result["generation"], body["generation"], who))
            self._audit(lambda: self.audit.update_sinks(self._current().resources))
        return result

    def get(self, query: dict[str, str]) -> dict[str, Any]:
        return self._config(get_resources, query.get("kind", ""), query.get("name"), query.get("namespace"))

    def _config(self, operation: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
        try:
            return operation(self.store, *args)
        except ConfigError as exc:
            extra = {"problems": exc.problems} if exc.problems else {}
            raise _HttpError(exc.status, str(exc), **extra) from None

    def history(self) -> dict[str, Any]:
        return {"generations": [g.to_json() for g in self.store.history()]}

    def status(self) -> dict[str, Any]:
        acks = self.store.acks()
        sidecars = []
        for s in self.store.sidecars():
            ack = acks.get(s.sidecar)
            sidecars.append(
                {
                    "sidecar": s.sidecar,
                    "identity": s.identity,
                    "inbound": s.inbound,
                    "ack": None
                    if ack is None
                    else {"generation": ack.generation, "status": ack.status, "reason": ack.reason},
                }
            )
        return {"generation": self.store.generation(), "sidecars": sidecars, "pid": os.getpid()}


def _str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise _HttpError(400, f"{key!r} (a non-empty string) is required")
    return value


def _svid_json(chain: bytes, bundle: bytes, not_after: dt.datetime) -> dict[str, Any]:
    return {
        "chain": chain.decode("ascii"),
        "bundle": bundle.decode("ascii"),
        "not_after": not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], plane: ControlPlane):
        self.plane = plane
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        # The handshake happens in the connection's own thread (see _Handler.setup).
        return self.plane._ssl.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up mid-request is not the control plane's problem to print


Route = Callable[["_Handler", dict[str, Any], dict[str, str]], dict[str, Any] | None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "meshward-control"
    sys_version = ""
    timeout = 60
    server: _Server
    _raw = b""

    def setup(self) -> None:
        # Headers and body go out as separate writes: without TCP_NODELAY, Nagle + delayed ACK
        # hold the second one for ~40 ms, on every watch push.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request.settimeout(10)
        try:
            self.request.do_handshake()
        except (OSError, ssl.SSLError):
            self.close_connection = True
            raise
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no request log: paths carry no secrets but the CLI's output must stay clean

    @property
    def plane(self) -> ControlPlane:
        return self.server.plane

    def _peer(self) -> SpiffeId:
        assert isinstance(self.request, ssl.SSLSocket)
        peer = peer_spiffe_id(self.request)
        if peer is None:
            raise _HttpError(401, "this endpoint needs a client certificate (an X.509-SVID of this mesh)")
        if peer.trust_domain != self.plane.trust_domain:
            raise _HttpError(403, f"{peer.uri} is not in trust domain {self.plane.trust_domain}")
        return peer

    def _operator(self) -> str:
        peer = self._peer()
        if peer != self.plane.operator:
            raise _HttpError(
                403, f"{peer.uri} is not the operator; only {self.plane.operator.uri} may do this"
            )
        user = self.headers.get("X-Meshward-User", "")[:64]
        return f"{user} ({peer.short})" if user else peer.uri

    def _send(self, status: int, payload: dict[str, Any] | _RawJson | None) -> None:
        if isinstance(payload, _RawJson):
            data = bytes(payload)
        else:
            data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            raise _HttpError(413, f"request body must have a Content-Length up to {MAX_BODY} bytes")
        self._raw = self.rfile.read(length) if length else b""
        if self.headers.get("Content-Type", "").startswith("application/x-ndjson"):
            return {}
        raw = self._raw or b"{}"
        try:
            body = json.loads(raw)
        except ValueError:
            raise _HttpError(400, "request body must be JSON") from None
        if not isinstance(body, dict):
            raise _HttpError(400, "request body must be a JSON object")
        return body

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            body = self._body() if method == "POST" else {}
            payload = self._route(method, url.path, body, query)
            self._send(200 if payload is not None else 204, payload)
        except _HttpError as exc:
            self._send(exc.status, {"error": str(exc), **exc.extra})
        except (ConnectionError, TimeoutError, ssl.SSLError):
            self.close_connection = True
        except Exception as exc:  # a bug here must not kill the connection thread silently
            self._send(500, {"error": f"control plane error: {type(exc).__name__}: {exc}"})

    def _route(
        self, method: str, path: str, body: dict[str, Any], query: dict[str, str]
    ) -> dict[str, Any] | _RawJson | None:
        plane = self.plane
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
            case ("POST", "/v1/config/apply"):
                return plane.apply(body, self._operator())
            case ("POST", "/v1/config/rollback"):
                return plane.rollback(body, self._operator())
            case ("GET", "/v1/config/get"):
                self._operator()
                return plane.get(query)
            case ("GET", "/v1/config/history"):
                self._operator()
                return plane.history()
            case ("GET", "/v1/status"):
                self._operator()
                return plane.status()
        raise _HttpError(404, f"no endpoint {method} {path}")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")
