"""Sidecar telemetry: Prometheus metrics, the JSON access log, and W3C trace context / OTLP spans.

- :mod:`.metrics`   request counts and durations with Istio's labels (+ model, AI operation),
                    authz, DLP and audit counters; exported at scrape time;
- :mod:`.accesslog` one JSON line per request, written by a background thread;
- :mod:`.tracing`   ``traceparent`` parsing and propagation; spans over OTLP/HTTP when configured.

The filter that drives them per request is :mod:`meshward.filters.telemetry`; the audit trail is
:mod:`meshward.audit`.
"""

from meshward.telemetry.accesslog import AccessLog, access_line, access_record
from meshward.telemetry.metrics import BoundedLabel, TelemetryCollector, TelemetryMetrics
from meshward.telemetry.tracing import SpanExporter, TraceContext, parse_traceparent

__all__ = [
    "AccessLog",
    "BoundedLabel",
    "SpanExporter",
    "TelemetryCollector",
    "TelemetryMetrics",
    "TraceContext",
    "access_line",
    "access_record",
    "parse_traceparent",
]
