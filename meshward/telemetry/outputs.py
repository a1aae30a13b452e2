"""Where per-request telemetry goes in one sidecar process: metrics, access log, audit, spans.

One :class:`TelemetryOutputs` per process (a runtime service, :func:`telemetry_outputs`), so it
outlives config generations. The telemetry filter (:mod:`meshward.telemetry.filter`) writes to
it for every request; the sidecar's telemetry pipeline (:mod:`meshward.proxy.pipeline`) owns
what stands behind it: it opens the access log and the span exporter a generation asks for and
points :attr:`~TelemetryOutputs.audit_sink` at the process's audit spool. Without a pipeline (a
filter built on a bare runtime) only the metrics count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meshward.filters.base import SidecarRuntime
from meshward.telemetry.accesslog import AccessLog
from meshward.telemetry.metrics import TelemetryMetrics
from meshward.telemetry.tracing import SpanExporter

__all__ = ["AuditSink", "TelemetryOutputs", "telemetry_outputs"]

#: Appends one audit record (an OCSF event) to this process's trail.
AuditSink = Callable[[dict[str, Any]], None]


class TelemetryOutputs:
    """The destinations of one process's telemetry; ``None`` means "not kept"."""

    __slots__ = ("access_log", "audit_sink", "exporter", "metrics", "reporter")

    def __init__(self, runtime: SidecarRuntime) -> None:
        self.reporter = runtime.workload.spiffe_id(runtime.trust_domain)  # this sidecar's identity
        self.metrics = TelemetryMetrics()
        self.access_log: AccessLog | None = None
        self.exporter: SpanExporter | None = None
        self.audit_sink: AuditSink | None = None

    def audit(self, event: dict[str, Any]) -> None:
        """Append one audit record (nothing when this process keeps no trail)."""
        sink = self.audit_sink
        if sink is not None:
            sink(event)


def telemetry_outputs(runtime: SidecarRuntime) -> TelemetryOutputs:
    """This process's outputs (made on first use)."""
    return runtime.service(TelemetryOutputs, lambda: TelemetryOutputs(runtime))
