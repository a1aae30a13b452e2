"""Sidecar telemetry: Prometheus metrics, the JSON access log, and W3C trace context / OTLP spans.

- :mod:`.metrics`   request counts and durations with Istio's labels (+ model, AI operation),
                    authz, DLP and audit counters; exported at scrape time;
- :mod:`.accesslog` one JSON line per request, written by a background thread;
- :mod:`.tracing`   ``traceparent`` parsing and propagation; spans over OTLP/HTTP when configured;
- :mod:`.taphub`    the live tap: request metadata to whoever watches the admin ``/tap``;
- :mod:`.outputs`   where one process's telemetry goes (metrics, access log, audit, spans);
- :mod:`.filter`    the telemetry filter, last in the chain: records each request into them.

The process machinery behind the outputs (audit spool and shipper, access-log and exporter
lifecycle) is the sidecar's telemetry pipeline, :mod:`meshward.proxy.pipeline`; the audit trail
is :mod:`meshward.audit`. This ``__init__`` imports neither the filter nor the tap.
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
