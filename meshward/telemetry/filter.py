"""Telemetry and audit filter: metrics, access log, trace context and audit records per request.

Runs last in the chain. ``on_request`` (reached only by requests every other filter let
through) starts this hop's span and replaces the ``traceparent`` forwarded to the app.
``on_complete`` (run for every request, denied ones included) defers the recording by one
loop tick so the other filters' ``on_complete`` (token accounting) have filled the context,
then: one metrics observation, one access-log line, one audit record (every request, or only
security-relevant ones with ``Mesh.spec.audit.recordAllowed: false``), one span if an OTLP
endpoint is configured, and one tap event while someone watches.

This filter only records: it writes to the process's
:class:`~meshward.telemetry.outputs.TelemetryOutputs`, whose access log, span exporter and audit
spool are opened, configured per generation, shipped and closed by the sidecar's telemetry
pipeline (:mod:`meshward.proxy.pipeline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from mypy_extensions import mypyc_attr

from meshward.audit.chain import compact_json
from meshward.audit.ocsf import http_activity, is_security_relevant
from meshward.config.snapshot import MeshSnapshot
from meshward.filters.base import Filter, Peer, RequestContext, SidecarRuntime
from meshward.telemetry.accesslog import access_line
from meshward.telemetry.outputs import TelemetryOutputs, telemetry_outputs
from meshward.telemetry.taphub import TapHub, tap_event, tap_hub
from meshward.telemetry.tracing import TraceContext

__all__ = ["TelemetryFilter", "build", "telemetry_enabled"]

log = logging.getLogger("meshward.telemetry")

_SCRATCH = "telemetry.trace"


def telemetry_enabled() -> bool:
    """False when ``MESHWARD_TELEMETRY=off`` is in the sidecar's environment (see :func:`build`)."""
    return os.environ.get("MESHWARD_TELEMETRY") != "off"


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled; egress subclasses it
class TelemetryFilter(Filter):
    name = "telemetry"
    eager_safe = True  # never waits

    def __init__(self, outputs: TelemetryOutputs, snapshot: MeshSnapshot, tap: TapHub) -> None:
        self.outputs = outputs
        self.metrics = outputs.metrics
        w = snapshot.workload
        self.destination = outputs.reporter
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
        self.workload_of[outputs.reporter] = w.name
        self._sources: dict[tuple[str, str | None], tuple[str, str, str, str, str]] = {}
        self._due: list[tuple[RequestContext, float]] = []  # finished, recorded at the next tick
        self.tap = tap  # the live tap (meshward.telemetry.taphub)

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
        outputs = self.outputs
        access_log = outputs.access_log
        if access_log is not None:
            access_log.write_line(access_line(ctx, self._destination_json, self._service_json, now, duration))
        # AI calls that used tokens are always audited: `meshward usage` reads spend from the trail.
        audit = outputs.audit_sink
        if audit is not None and (self.record_allowed or ctx.tokens.total or is_security_relevant(ctx)):
            audit(http_activity(ctx, int(now * 1000), int(duration * 1000)))
        exporter = outputs.exporter
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
    traces or AUDIT TRAIL (the sidecar then runs no telemetry pipeline either). It exists for
    the all-off baseline of ``bench.telemetry``.
    """
    if not telemetry_enabled():
        log.error("MESHWARD_TELEMETRY=off: this sidecar keeps no metrics, access log or audit trail")
        return None
    return TelemetryFilter(telemetry_outputs(runtime), snapshot, tap_hub(runtime))
