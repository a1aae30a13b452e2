"""The control plane's decisions: who may do what, CSR signing, config, the watch, ACKs, audit.

:class:`ControlService` is the control plane without its transport: every method takes what a
request carries (its JSON body or query, and the caller's verified SPIFFE ID) and returns the
JSON answer or raises :class:`ApiError` with the HTTP status. :mod:`meshward.control.server`
serves it over HTTPS.

Distribution is push, not polling: a sidecar's watch is a long-poll that carries the digest of
the last snapshot it received; :meth:`ControlService.watch` answers at once when the sidecar's
snapshot differs, else it sleeps on a condition variable that every apply, rollback and endpoint
registration notifies. A change reaches every watching sidecar in one round trip. The digest
(rather than a counter) lets a restarted control plane resume distribution with no shared state.

The trust bundle travels the same way: a watch that carries ``bundle=DIGEST`` (of the bundle the
sidecar holds) is answered ``{"bundle": PEM}`` at once when the control plane's differs, e.g.
after ``meshward ca rotate --root``, which :meth:`ControlService.trust_changed` announces.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from meshward.audit.control import ControlAudit
from meshward.audit.store import AuditRejected
from meshward.config.build import find_workload, mesh_spec
from meshward.config.encode import GenerationEncoder
from meshward.config.endpoint import parse_endpoint
from meshward.config.store import ApplyResult, ConfigStore, SidecarRecord
from meshward.control.endpoints import UnknownSidecar, endpoint_rows, remove_registration
from meshward.control.limits import (
    MAX_CSR_BYTES,
    MAX_SIDECARS_PER_WORKLOAD,
    MAX_TOKEN_BYTES,
    RefusalLimiter,
    clip,
)
from meshward.control.operations import (
    ConfigError,
    apply_text,
    compare_generations,
    delete_resources,
    get_resources,
    history_of,
    rollback_to,
)
from meshward.detection.engine import DetectionEngine
from meshward.identity.authority import CsrRefused
from meshward.identity.issuance import IdentityService
from meshward.identity.ledger import iso
from meshward.identity.spiffe import SpiffeId, is_reserved
from meshward.identity.state import MeshState
from meshward.resources.mesh import parse_duration
from meshward.tls.control import bundle_digest, control_id

__all__ = ["MAX_WATCH_SECONDS", "ApiError", "ControlService", "RawJson"]

MAX_WATCH_SECONDS = 30.0

log = logging.getLogger(__name__)


class RawJson(bytes):
    """A response body already encoded as JSON."""


class ApiError(Exception):
    """The request is refused: ``status`` is the HTTP status, ``extra`` more JSON fields."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.extra = status, extra


class ControlService:
    """One mesh state directory's control plane logic (thread-safe: a thread per request)."""

    def __init__(self, state: MeshState) -> None:
        self.state = state
        self.trust_domain = state.trust_domain
        self.identity = IdentityService(state)
        self.store = ConfigStore(state.db_path, self.trust_domain)
        self.operator = state.operator_id
        # The audit trail: sidecars' batches, our own security events, SIEM forwarding.
        self.audit = ControlAudit(state.path)
        # Our own audit events are written by one worker, off the response path: an apply
        # answers (and its sidecars compile) without waiting for the audit file's fsync.
        self._audit_events: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._audit_worker = threading.Thread(target=self._record_audit, name="control-audit", daemon=True)
        self._audit_worker.start()
        self._changed = threading.Condition()
        self._version = 0
        self._view: GenerationEncoder | None = None
        self._bundle_read: tuple[int, bytes, str] | None = None  # see _bundle
        self.closing = False
        # Threat detection: sidecars' reports → alerts (audit, webhooks) → quarantine generations.
        self.detection = DetectionEngine(
            state.path,
            self.store,
            self.trust_domain,
            lambda: self._current().resources,
            self._record_finding,
            self._generated,
        )
        self.refusals = RefusalLimiter()
        #: Serials of revoked, unexpired SVIDs: in every snapshot, refused at our handshake too.
        self.revoked: frozenset[str] = frozenset(self.identity.revoked_serials())

    # -- lifecycle -------------------------------------------------------------------------------
    def _record_audit(self) -> None:
        while (event := self._audit_events.get()) is not None:
            event()

    def _audit(self, event: Callable[[], None]) -> None:
        self._audit_events.put(event)

    def announce(self) -> None:
        """The control plane is serving: record it, and start forwarding to the Mesh's sinks."""
        self._audit(lambda: self.audit.started(control_id(self.trust_domain).uri))
        self._audit(lambda: self.audit.update_sinks(self._current().resources))
        self.detection.start()

    def _record_finding(self, event: dict[str, Any]) -> None:
        def record() -> None:
            try:
                self.audit.store.record(event)
            except OSError as exc:
                log.error("audit: could not record a detection finding: %s", exc)

        self._audit(record)

    def _generated(self, result: ApplyResult, who: str) -> None:
        """Detection stored a generation (a quarantine, or its end): push it and audit it."""
        self._notify()
        changes = sum(1 for c in result.changes if c.action != "unchanged")
        self._audit(lambda: self.audit.config_applied(result.generation, who, changes))

    def close(self) -> None:
        """Wake every watch (they answer 204) and flush the audit trail."""
        self.closing = True
        self.detection.close()
        with self._changed:
            self._changed.notify_all()
        self._audit(lambda: self.audit.stopped(control_id(self.trust_domain).uri))
        self._audit_events.put(None)
        self._audit_worker.join(10)
        self.audit.close()
        self.identity.close()

    # -- the shared view and change notification -------------------------------------------------
    def _current(self) -> GenerationEncoder:
        """The current generation and registered sidecars, cached until the next change."""
        with self._changed:
            if self._view is None:
                self._view = GenerationEncoder(
                    self.store.generation(),
                    self.store.resources(),
                    self.store.sidecars(),
                    self.trust_domain,
                    sorted(self.revoked),
                )
            return self._view

    def _notify(self) -> None:
        with self._changed:
            self._view = None
            self._version += 1
            self._changed.notify_all()

    def _bundle(self, version: int) -> tuple[bytes, str]:
        """The trust bundle and its digest, read once per change notification (``version``): a
        change wakes every watch at once, and they all compare against the same read."""
        cached = self._bundle_read
        if cached is None or cached[0] != version:
            bundle = self.identity.bundle_pem()
            cached = self._bundle_read = (version, bundle, bundle_digest(bundle))
        return cached[1], cached[2]

    def check_revocations(self) -> bool:
        """Re-read the revoked serials (``meshward certs revoke`` writes the ledger from another
        process); a change is pushed to every watching sidecar. True if it changed."""
        revoked = frozenset(self.identity.revoked_serials())
        if revoked == self.revoked:
            return False
        self.revoked = revoked
        self._notify()
        return True

    def trust_changed(self) -> None:
        """The trust bundle changed (a CA rotation, an ended overlap): wake every watch to push it."""
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    # -- identity --------------------------------------------------------------------------------
    def svid_ttl(self) -> dt.timedelta:
        """The Mesh resource's ``certificateTTL`` (default 1 h)."""
        spec = mesh_spec(self._current().resources, self.trust_domain)
        return dt.timedelta(seconds=parse_duration(spec.certificate_ttl))

    def _too_many_refusals(self, src_ip: str) -> ApiError:
        return ApiError(429, f"too many refused requests from {src_ip}; try again in a minute")

    def sign(self, body: dict[str, Any], src_ip: str) -> dict[str, Any]:
        if self.refusals.over(src_ip):
            raise self._too_many_refusals(src_ip)
        csr, token = _str(body, "csr", MAX_CSR_BYTES).encode(), _str(body, "token", MAX_TOKEN_BYTES)
        try:
            issued = self.identity.issue(csr, token, self.svid_ttl())
        except CsrRefused as exc:
            if not self.refusals.allow(src_ip):
                raise self._too_many_refusals(src_ip) from None
            reason = clip(exc.reason)
            self._audit(lambda: self.audit.certificate_refused(reason, src_ip=src_ip))
            self.detection.csr_refused(src_ip, reason)
            raise ApiError(403, reason) from None
        self._audit(
            lambda: self.audit.certificate_issued(
                issued.spiffe_id.uri, issued.serial, issued.not_after, "join-token", src_ip
            )
        )
        return _svid_json(issued.chain_pem, issued.bundle_pem, issued.not_after)

    def renew(self, body: dict[str, Any], peer: SpiffeId, serial: str | None, src_ip: str) -> dict[str, Any]:
        if self.refusals.over(src_ip):
            raise self._too_many_refusals(src_ip)
        try:
            issued = self.identity.renew(
                _str(body, "csr", MAX_CSR_BYTES).encode(), peer, self.svid_ttl(), peer_serial=serial
            )
        except CsrRefused as exc:
            if not self.refusals.allow(src_ip):
                raise self._too_many_refusals(src_ip) from None
            reason = clip(exc.reason)
            self._audit(lambda: self.audit.certificate_refused(reason, peer.uri, src_ip))
            self.detection.csr_refused(src_ip, reason, peer.uri)
            raise ApiError(403, reason) from None
        self._audit(
            lambda: self.audit.certificate_issued(
                issued.spiffe_id.uri, issued.serial, issued.not_after, "renewal", src_ip
            )
        )
        return _svid_json(issued.chain_pem, issued.bundle_pem, issued.not_after)

    # -- sidecars --------------------------------------------------------------------------------
    def _authorize_workload(self, peer: SpiffeId, workload: str) -> tuple[str, str]:
        """A workload acts only for itself: the caller's verified identity must be its identity."""
        ns, _, name = workload.partition("/")
        try:
            asked = SpiffeId.from_uri(f"spiffe://{self.trust_domain}/ns/{ns}/sa/{name}")
        except ValueError:
            raise ApiError(400, f"workload must be NS/NAME, not {workload[:100]!r}") from None
        if is_reserved(asked):
            raise ApiError(403, f"namespace {ns} is reserved for the mesh itself")
        found = find_workload(self._current().resources, ns, name)
        sa = found.service_account if found is not None else name
        if peer != SpiffeId(self.trust_domain, ns, sa):
            raise ApiError(403, f"{peer.uri} may not act for workload {workload}")
        return ns, name

    def _sidecar_id(self, body: dict[str, Any], workload: str) -> str:
        sidecar = _str(body, "sidecar", 256)
        if sidecar != workload and not sidecar.startswith(workload + "#"):
            raise ApiError(400, f"sidecar id {sidecar!r} must be {workload} or {workload}#INSTANCE")
        return sidecar

    def register(self, body: dict[str, Any], peer: SpiffeId) -> dict[str, Any]:
        workload = _str(body, "workload")
        ns, name = self._authorize_workload(peer, workload)
        inbound = _str(body, "inbound", 256)
        try:
            parse_endpoint(inbound)
        except ValueError as exc:
            raise ApiError(400, f"inbound: {exc}") from None
        record = SidecarRecord(self._sidecar_id(body, workload), ns, name, peer.uri, inbound)
        others = {s.sidecar for s in self.store.sidecars() if (s.namespace, s.workload) == (ns, name)}
        if record.sidecar not in others and len(others) >= MAX_SIDECARS_PER_WORKLOAD:
            raise ApiError(429, f"workload {workload} has {len(others)} registered sidecars already")
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
            raise ApiError(400, "generation must be an integer")
        ok = bool(body.get("ok"))
        reason = clip(str(body.get("reason", "")))
        self._record_ack(workload, self._sidecar_id(body, workload), generation, ok, reason)
        return {}

    def _record_ack(self, workload: str, sidecar: str, generation: int, ok: bool, reason: str) -> None:
        own = self.store.record_ack(
            sidecar, generation, ok, reason, workload=workload, limit=MAX_SIDECARS_PER_WORKLOAD
        )
        if own:
            raise ApiError(429, f"workload {workload} has {own} sidecars reporting already")

    def _watch_ack(self, query: dict[str, str], workload: str) -> None:
        """A watch may carry the ACK of the generation the sidecar swapped in since its last
        watch (``ack=GENERATION&sidecar=ID``): one request per generation and sidecar instead of
        two. A NACK, with its reason, is still a ``POST /v1/sidecars/ack``."""
        text = query.get("ack")
        if text is None:
            return
        if not (text.isascii() and text.isdigit() and len(text) <= 18):
            raise ApiError(400, "ack must be a generation number")
        sidecar = query.get("sidecar", "")
        self._record_ack(workload, self._sidecar_id({"sidecar": sidecar}, workload), int(text), True, "")

    def watch(self, query: dict[str, str], peer: SpiffeId) -> RawJson | None:
        """The workload's snapshot once it differs from ``have`` (or the trust bundle once it
        differs from ``bundle``, when given); None after ``timeout`` seconds."""
        workload = query.get("workload", "")
        ns, name = self._authorize_workload(peer, workload)
        self._watch_ack(query, workload)
        have = query.get("have", "")
        have_bundle = query.get("bundle")
        try:
            timeout = min(float(query.get("timeout", "25")), MAX_WATCH_SECONDS)
        except ValueError:
            raise ApiError(400, "timeout must be a number of seconds") from None
        if math.isnan(timeout):
            raise ApiError(400, "timeout must be a number of seconds")
        deadline = time.monotonic() + timeout
        while not self.closing:
            with self._changed:
                version = self._version
            if have_bundle is not None:
                bundle, digest = self._bundle(version)
                if digest != have_bundle:
                    return RawJson(json.dumps({"bundle": bundle.decode("ascii")}).encode())
            digest, text = self._current().encode(ns, name)
            if digest != have:  # the body is assembled, not dumped again: this runs per sidecar
                return RawJson(f'{{"digest": "{digest}", "snapshot": {text}}}'.encode())
            with self._changed:
                while self._version == version and not self.closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._changed.wait(left)
        return None

    def secret(self, query: dict[str, str], peer: SpiffeId) -> dict[str, Any]:
        """A credential for the sidecar of ``workload``, only if an EgressPolicy lets it reach an
        ExternalService that names the secret (:func:`meshward.egress.secrets.may_receive`)."""
        from meshward.egress.secrets import refusal_event, release_secret

        ns, name = self._authorize_workload(peer, query.get("workload", ""))
        secret = query.get("name", "")
        try:
            return release_secret(
                self.state.path, self._current().resources, self.trust_domain, ns, name, secret
            )
        except (PermissionError, ValueError) as exc:
            event = refusal_event(peer.uri, secret, str(exc))  # audited: names, never a value

            def record() -> None:
                with contextlib.suppress(OSError):
                    self.audit.store.record(event)

            self._audit(record)
            raise ApiError(403 if isinstance(exc, PermissionError) else 404, str(exc)) from None

    def ingest_audit(self, batch: bytes, peer: SpiffeId) -> dict[str, Any]:
        try:
            return self.audit.ingest(peer.uri, batch).to_json()
        except AuditRejected as exc:
            extra = exc.to_json()
            extra.pop("error", None)
            raise ApiError(exc.status, str(exc), **extra) from None

    # -- operator API ----------------------------------------------------------------------------
    def apply(self, body: dict[str, Any], who: str) -> dict[str, Any]:
        text, filename = _str(body, "text"), clip(str(body.get("filename") or "<apply>"), 256)
        result = self._config(apply_text, text, filename, bool(body.get("dry_run")), who)
        if result.get("changed"):
            self._notify()
            self.detection.config_changed()
            changes = sum(1 for c in result["changes"] if c["action"] != "unchanged")
            self._audit(lambda: self.audit.config_applied(result["generation"], who, changes))
            self._audit(lambda: self.audit.update_sinks(self._current().resources))
        return result

    def rollback(self, body: dict[str, Any], who: str) -> dict[str, Any]:
        result = self._config(rollback_to, body.get("generation"), who)
        if result.get("changed"):
            self._notify()
            self.detection.config_changed()
            self._audit(lambda: self.audit.config_rolled_back(result["generation"], body["generation"], who))
            self._audit(lambda: self.audit.update_sinks(self._current().resources))
        return result

    def current_resources(self) -> list[Any]:
        """The current generation's resources (cached until the next change: cheap to poll)."""
        return list(self._current().resources)

    def apply_resources(self, resources: list[Any], who: str) -> int | None:
        """Store ``resources`` as a new generation on behalf of a control-plane component (the
        rollout controller), distribute and audit it like an apply; the generation if changed."""
        result = self.store.apply(resources, who)
        if not result.changed:
            return None
        self._notify()
        self._audit(lambda: self.audit.config_applied(result.generation, who, len(resources)))
        return result.generation

    def record_event(self, event: dict[str, Any]) -> None:
        """One of the control plane's own audit events (written off the caller's thread)."""
        self._audit(lambda: self.audit._record(event))

    def delete(self, body: dict[str, Any], who: str) -> dict[str, Any]:
        result = self._config(delete_resources, body.get("resources"), who)
        if result.get("changed"):
            self._notify()
            gone = [
                f"{c['kind']} {c['namespace']}/{c['name']}"
                for c in result["changes"]
                if c["action"] == "deleted"
            ]
            self._audit(lambda: self.audit.config_deleted(result["generation"], who, gone))
            self._audit(lambda: self.audit.update_sinks(self._current().resources))
        return result

    def get(self, query: dict[str, str]) -> dict[str, Any]:
        generation = _int_query(query, "generation") if "generation" in query else None
        kind, name, namespace = query.get("kind", ""), query.get("name"), query.get("namespace")
        return self._config(get_resources, kind, name, namespace, generation)

    def compare(self, query: dict[str, str]) -> dict[str, Any]:
        return self._config(compare_generations, _int_query(query, "from"), _int_query(query, "to"))

    def _config(self, operation: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
        try:
            return operation(self.store, *args)
        except ConfigError as exc:
            extra = {"problems": exc.problems} if exc.problems else {}
            raise ApiError(exc.status, str(exc), **extra) from None

    def endpoints(self) -> dict[str, Any]:
        """Every registered sidecar endpoint, and whether the services table uses it."""
        return {"endpoints": endpoint_rows(self.store)}

    def remove_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        """Operator: forget one sidecar's registration (its endpoint leaves every snapshot)."""
        sidecar = _str(body, "sidecar", 256)
        try:
            remove_registration(self.store, sidecar)
        except UnknownSidecar as exc:
            raise ApiError(404, str(exc)) from None
        self._notify()
        return {"removed": sidecar}

    def history(self) -> dict[str, Any]:
        return history_of(self.store)

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
                    "ack": None if ack is None else ack.summary(),
                }
            )
        return {"generation": self.store.generation(), "sidecars": sidecars, "pid": os.getpid()}


def _str(body: dict[str, Any], key: str, max_length: int = 1 << 20) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"{key!r} (a non-empty string) is required")
    if len(value) > max_length:
        raise ApiError(413, f"{key!r} is longer than {max_length} characters")
    return value


def _int_query(query: dict[str, str], key: str) -> int:
    try:
        return int(query.get(key, ""))
    except ValueError:
        raise ApiError(400, f"{key!r} must be an integer") from None


def _svid_json(chain: bytes, bundle: bytes, not_after: dt.datetime) -> dict[str, Any]:
    return {
        "chain": chain.decode("ascii"),
        "bundle": bundle.decode("ascii"),
        "not_after": iso(not_after),
    }
