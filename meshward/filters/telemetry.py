"""Telemetry and audit filter: metrics, access log, trace context and audit records per request.

Runs last in the chain. ``on_request`` (reached only by requests every other filter let
through) starts this hop's span and replaces the ``traceparent`` forwarded to the app.
``on_complete`` (run for every request, denied ones included) defers the recording by one
loop tick so the other filters' ``on_complete`` (token accounting) have filled the context,
then: one metrics observation, one access-log line, one audit record (every request, or only
security-relevant ones with ``Mesh.spec.audit.recordAllowed: false``), one span if an OTLP
endpoint is configured.

State that outlives a config generation (:class:`TelemetryShared`: counters, the access log,
the audit spool and its shipper, the span exporter) lives in ``runtime.shared["telemetry"]``.
The sidecar process starts the shipper with :func:`start_audit_shipper`, and publishes its SVID's
notAfter as ``runtime.shared["identity.not_after"]`` (a datetime or Unix time) for the
``meshward_certificate_expiration_timestamp_seconds`` gauge.

The audit spool is ``<state_dir>/audit/spool-<n>``: the first slot this process can lock, so
several worker processes sharing a state directory each keep their own chain, and a restarted
worker takes over (and resumes shipping) its predecessor's slot.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Any

from mypy_extensions import mypyc_attr

from meshward.audit.chain import compact_json
from meshward.audit.ocsf import api_activity, application_lifecycle, http_activity, is_security_relevant
from meshward.audit.shipper import AuditPost, AuditShipper
from meshward.audit.spool import AuditSpool
from meshward.config.snapshot import MeshSnapshot
from meshward.dashboard.taphub import tap_event, tap_hub
from meshward.filters.base import Filter, Peer, RequestContext, SidecarRuntime
from meshward.telemetry.accesslog import AccessLog, access_line
from meshward.telemetry.metrics import TelemetryCollector, TelemetryMetrics
from meshward.telemetry.tracing import SpanExporter, TraceContext

__all__ = ["TelemetryFilter", "TelemetryShared", "build", "start_audit_shipper", "telemetry_state"]

log = logging.getLogger("meshward.telemetry")

_SCRATCH = "telemetry.trace"
_MAX_SPOOL_SLOTS = 64
_AUDIT_POST_KEY = "control.audit_post"  # meshward.proxy.controlclient.AUDIT_POST_KEY


def _open_spool(state_dir: Path) -> tuple[AuditSpool, int] | None:
    """Lock the first free ``spool-<n>`` slot; None if every slot is taken."""
    base = state_dir / "audit"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    for n in range(_MAX_SPOOL_SLOTS):
        fd = os.open(base / f"spool-{n}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return AuditSpool(base / f"spool-{n}"), fd
    return None


class TelemetryShared:
    """Per-process telemetry state (``runtime.shared["telemetry"]``)."""

    def __init__(self, runtime: SidecarRuntime) -> None:
        self.runtime = runtime
        self.reporter = runtime.workload.spiffe_id(runtime.trust_domain)
        self.metrics = TelemetryMetrics()
        self.access_log: AccessLog | None = None
        self.access_log_mode = "off"
        self.exporter: SpanExporter | None = None
        self.exporter_endpoint: str | None = None
        self.spool: AuditSpool | None = None
        self.shipper: AuditShipper | None = None
        self._spool_lock = -1
        self._shipper_task: asyncio.Task[None] | None = None
        if runtime.metrics_registry is not None:
            runtime.metrics_registry.register(
                TelemetryCollector(self.metrics, self._gauges, lambda: runtime.shared.get("authz.counters"))
            )
        if runtime.state_dir is not None:
            opened = _open_spool(Path(runtime.state_dir))
            if opened is None:
                log.error(
                    "audit: all %d spool slots are locked; audit records are NOT kept", _MAX_SPOOL_SLOTS
                )
            else:
                self.spool, self._spool_lock = opened
                if self.spool.recovered_bytes:
                    log.warning(
                        "audit: cut a torn record (%d bytes) from the spool", self.spool.recovered_bytes
                    )
                self.audit(
                    application_lifecycle("meshward-sidecar", self.reporter, started=True, time_ms=_now_ms())
                )
                atexit.register(self.close)
        else:
            log.warning("audit: the sidecar has no state directory; audit records are not kept")

    # -- configuration (per generation) ----------------------------------------------------------
    def configure(self, snapshot: MeshSnapshot) -> None:
        settings = snapshot.mesh.telemetry
        mode = settings.access_log
        state_dir = self.runtime.state_dir
        if mode == "state" and state_dir is None:
            mode = "stdout"
        if mode != self.access_log_mode:
            old, self.access_log = self.access_log, None
            if old is not None:
                old.close()
            if mode != "off":
                path = Path(state_dir) / "access.log" if mode == "state" and state_dir is not None else None
                self.access_log = AccessLog(path, on_drop=self._dropped)
            self.access_log_mode = mode
        endpoint = settings.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if endpoint != self.exporter_endpoint:
            if self.exporter is not None:
                self.exporter.shutdown()
            w = self.runtime.workload
            self.exporter = (
                SpanExporter(
                    endpoint,
                    w.service,
                    {"service.namespace": w.namespace, "meshward.identity": self.reporter},
                )
                if endpoint
                else None
            )
            self.exporter_endpoint = endpoint

    # -- audit -----------------------------------------------------------------------------------
    def audit(self, event: dict[str, Any]) -> None:
        spool = self.spool
        if spool is None:
            return
        try:
            spool.append(event)
        except OSError as exc:  # disk full: never take the data plane down for it, but say so
            log.error("audit: could not write to the spool: %s", exc)
            return
        self.metrics.audit_records += 1
        shipper = self.shipper
        if shipper is not None:
            shipper.notify()
        elif _AUDIT_POST_KEY in self.runtime.shared:
            self.start_shipper(self.runtime.shared[_AUDIT_POST_KEY])

    def start_shipper(self, post: AuditPost, **options: Any) -> AuditShipper | None:
        """Ship the spool with ``post`` (needs the running loop; once per process)."""
        if self.spool is None:
            return None
        if self.shipper is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return None
            self.shipper = AuditShipper(self.spool, post, **options)
            self._shipper_task = loop.create_task(self.shipper.run())
        return self.shipper

    def _dropped(self, n: int) -> None:
        self.metrics.access_log_dropped += n

    def _gauges(self) -> dict[str, float | None]:
        return {
            "certificate_expiration": _certificate_expiration(self.runtime.shared),
            "audit_pending": float(self.spool.pending) if self.spool is not None else None,
        }

    def close(self) -> None:
        """Write the stop record and release everything (idempotent; also run at exit)."""
        if self.spool is not None:
            self.audit(
                application_lifecycle("meshward-sidecar", self.reporter, started=False, time_ms=_now_ms())
            )
            self.spool.close()
            self.spool = None
        if self.access_log is not None:
            self.access_log.close()
            self.access_log = None
        if self.exporter is not None:
            self.exporter.shutdown()
            self.exporter = None
        if self._spool_lock >= 0:
            os.close(self._spool_lock)
            self._spool_lock = -1


def _now_ms() -> int:
    return int(time.time() * 1000)


def _certificate_expiration(shared: dict[str, Any]) -> float | None:
    """The SVID's notAfter, from what the sidecar published in ``runtime.shared``."""
    value = shared.get("identity.not_after")
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    timestamp = getattr(value, "timestamp", None)
    return float(timestamp()) if callable(timestamp) else None


def telemetry_state(runtime: SidecarRuntime) -> TelemetryShared:
    state = runtime.shared.get("telemetry")
    if not isinstance(state, TelemetryShared):
        state = runtime.shared["telemetry"] = TelemetryShared(runtime)
    return state


def start_audit_shipper(runtime: SidecarRuntime, post: AuditPost, **options: Any) -> AuditShipper | None:
    """Start shipping this sidecar's spool to the control plane (on the running loop).

    Also started by itself at the next audit record once the sidecar has published its poster
    in ``runtime.shared["control.audit_post"]`` (what ``meshward proxy --control`` does).
    """
    return telemetry_state(runtime).start_shipper(post, **options)


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled; egress subclasses it
class TelemetryFilter(Filter):
    name = "telemetry"
    eager_safe = True  # never waits

    def __init__(self, shared: TelemetryShared, snapshot: MeshSnapshot) -> None:
        self.shared = shared
        self.metrics = shared.metrics
        w = snapshot.workload
        self.destination = shared.reporter
        self.destination_service = f"{w.service}.{w.namespace}"
        self.destination_workload = w.name
        self.record_allowed = snapshot.mesh.audit.record_allowed
        self._destination_json = compact_json(self.destination)
        self._service_json = compact_json(self.destination_service)
        # Peers' principals → their service (source_workload), from the config: a bounded set.
        self.workload_of: dict[str, str] = {}
        for entry in snapshot.services.values():
            for identity in entry.identities:
                self.workload_of[identity] = entry.service
        self.workload_of[shared.reporter] = w.name
        self._sources: dict[tuple[str, str | None], tuple[str, str, str, str, str]] = {}
        self._due: list[tuple[RequestContext, float]] = []  # finished, recorded at the next tick
        self.tap = tap_hub(shared.runtime.shared)  # the live tap (meshward.dashboard.taphub)

    def _source_labels(self, direction: str, peer: Peer) -> tuple[str, str, str, str, str]:
        """reporter, source_workload, source_namespace, source_principal, security policy."""
        spiffe = peer.spiffe_id
        labels = (
            "destination" if direction == "inbound" else "source",
            self.workload_of.get(spiffe, peer.service_account or "unknown") if spiffe else "unknown",
            peer.namespace or "unknown",
            peer.principal or "unknown",
            "mutual_tls" if spiffe else "none",
        )
        if len(self._sources) < 10_000:  # peers are mesh identities: bounded, but stay safe
            self._sources[(direction, spiffe)] = labels
        return labels

    async def on_request(self, ctx: RequestContext) -> None:
        trace = TraceContext.for_request(ctx.headers.get("traceparent"))
        ctx.trace_id = trace.trace_id
        ctx.headers["traceparent"] = trace.traceparent  # forwarded to the app as this hop's span
        ctx.scratch[_SCRATCH] = trace
        return None

    def on_complete(self, ctx: RequestContext) -> None:
        trace = ctx.scratch.get(_SCRATCH)
        if trace is None:  # answered before reaching us (denied): the trace still counts
            trace = ctx.scratch[_SCRATCH] = TraceContext.for_request(ctx.headers.get("traceparent"))
            ctx.trace_id = trace.trace_id
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.record(ctx, time.monotonic())
            return
        # After the remaining filters' on_complete (token usage is settled there); one callback
        # per loop tick records every request that finished in it.
        due = self._due
        if not due:
            loop.call_soon(self._record_due)
        due.append((ctx, loop.time()))

    def _record_due(self) -> None:
        due, self._due = self._due, []
        for ctx, end in due:
            try:
                self.record(ctx, end)
            except Exception:
                log.exception("telemetry: recording request %s failed", ctx.request_id)

    def record(self, ctx: RequestContext, end: float) -> None:
        """Everything telemetry keeps about one finished request."""
        duration = max(0.0, end - ctx.start)
        peer = ctx.peer
        m = self.metrics
        ai = ctx.ai
        flags = ctx.response_flags
        decision = ctx.decision
        source = self._sources.get((ctx.direction, peer.spiffe_id))
        if source is None:
            source = self._source_labels(ctx.direction, peer)
        m.observe_request(
            (
                *source[:4],
                self.destination_workload,
                self.destination_service,
                str(ctx.response_status),
                source[4],
                flags,
                m.models(ai.model),
                ai.operation,
            ),
            duration,
        )
        if self.tap.subscribers:  # someone watches `meshward tap` / the dashboard: else no cost
            self.tap.publish(tap_event(ctx, self.destination, self.destination_service, duration))
        if ctx.findings:
            for detector, count in ctx.findings.items():
                m.dlp_findings[m.detectors(detector)] += count
        dlp = ctx.scratch.get("dlp")
        if dlp:
            blocked = dlp.get("blocked") or dlp.get("export_limit")
            if blocked:
                m.dlp_blocked[str(blocked).split(":")[0]] += 1
        now = time.time()
        access_log = self.shared.access_log
        if access_log is not None:
            access_log.write_line(access_line(ctx, self._destination_json, self._service_json, now, duration))
        # AI calls that used tokens are always audited: `meshward usage` reads spend from the trail.
        if self.shared.spool is not None and (
            self.record_allowed or ctx.tokens.total or is_security_relevant(ctx)
        ):
            self.shared.audit(http_activity(ctx, int(now * 1000), int(duration * 1000)))
        exporter = self.shared.exporter
        if exporter is not None:
            trace: TraceContext = ctx.scratch[_SCRATCH]
            end_ns = time.time_ns()
            attributes: dict[str, Any] = {
                "http.request.method": ctx.method,
                "url.path": ctx.path,
                "http.response.status_code": ctx.response_status,
                "server.address": self.destination_service,
                "meshward.source.principal": peer.principal or "",
                "meshward.decision": decision,
                "meshward.response_flags": flags,
                "gen_ai.operation.name": ai.operation,
            }
            if ai.model:
                attributes["gen_ai.request.model"] = ai.model
            if ctx.policy:
                attributes["meshward.policy"] = ctx.policy
            if ctx.tokens.total:
                attributes["gen_ai.usage.input_tokens"] = ctx.tokens.input
                attributes["gen_ai.usage.output_tokens"] = ctx.tokens.output
            with contextlib.suppress(Exception):  # exporting must never break the data plane
                exporter.export(
                    trace,
                    f"{ctx.method} {self.destination_service}",
                    end_ns - int(duration * 1e9),
                    end_ns,
                    attributes,
                    ctx.response_status >= 500,
                )


def build(snapshot: MeshSnapshot, runtime: SidecarRuntime) -> Filter | None:
    """The telemetry filter for this generation (always present: every request is observed).

    ``MESHWARD_TELEMETRY=off`` in the sidecar's environment removes it — no metrics, access log,
    traces or AUDIT TRAIL. It exists for the all-off baseline of ``bench.telemetry``.
    """
    if os.environ.get("MESHWARD_TELEMETRY") == "off":
        log.error("MESHWARD_TELEMETRY=off: this sidecar keeps no metrics, access log or audit trail")
        return None
    shared = telemetry_state(runtime)
    shared.configure(snapshot)
    shared.audit(
        api_activity(
            "ApplyConfigGeneration",
            activity="update",
            actor=shared.reporter,
            time_ms=_now_ms(),
            success=True,
            resource={"type": "MeshSnapshot", "uid": str(snapshot.generation)},
            message=f"config generation {snapshot.generation} applied",
        )
    )
    return TelemetryFilter(shared, snapshot)
