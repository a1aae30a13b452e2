"""W3C Trace Context for every hop, and span export over OTLP/HTTP when configured.

Each sidecar hop is one span: the incoming ``traceparent`` (if valid) gives the trace id and
the parent span; otherwise a new trace starts. The hop's own span id goes upstream in a
replaced ``traceparent`` so the app (and the next hop) sees this hop as its parent, and every
hop shares the caller's trace id.

Without an OTLP endpoint nothing else happens (two random numbers and a string per request).
With one, :class:`SpanExporter` records the finished span through the OpenTelemetry SDK
(``BatchSpanProcessor`` + ``OTLPSpanExporter``, off the event loop). The SDK is imported only
then. The SDK's id generator is fed the ids this module already chose, so the exported span is
exactly the one the ``traceparent`` headers name.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["SpanExporter", "TraceContext", "parse_traceparent"]

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.S).fullmatch
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_getrandbits = random.getrandbits


def parse_traceparent(value: str | None) -> tuple[str, str, str] | None:
    """``00-<trace id>-<parent id>-<flags>`` → (trace id, parent id, flags), or None if invalid."""
    if not value:
        return None
    m = _TRACEPARENT(value.strip())
    if m is None:
        return None
    version, trace_id, parent_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, flags


@dataclass(slots=True)
class TraceContext:
    """This hop: the trace, its own span, the caller's span (None when the trace starts here)."""

    trace_id: str
    span_id: str
    parent_id: str | None
    flags: str

    @classmethod
    def for_request(cls, incoming: str | None) -> TraceContext:
        parsed = parse_traceparent(incoming)
        span_id = f"{_getrandbits(64) or 1:016x}"
        if parsed is None:
            return cls(f"{_getrandbits(128) or 1:032x}", span_id, None, "01")
        return cls(parsed[0], span_id, parsed[1], parsed[2])

    @property
    def traceparent(self) -> str:
        """The header to send upstream: same trace, this hop as the parent."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


class SpanExporter:
    """Exports one span per request over OTLP/HTTP (protobuf) to ``endpoint``."""

    def __init__(self, endpoint: str, service_name: str, attributes: dict[str, str] | None = None) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.id_generator import IdGenerator
        from opentelemetry.trace import (
            NonRecordingSpan,
            SpanContext,
            SpanKind,
            TraceFlags,
            set_span_in_context,
        )

        class _Chosen(IdGenerator):
            """Hands the SDK the ids this hop already put in its traceparent."""

            span_id = 0
            trace_id = 0

            def generate_span_id(self) -> int:
                return self.span_id

            def generate_trace_id(self) -> int:
                return self.trace_id

        self._ids = _Chosen()
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": service_name, **(attributes or {})}),
            id_generator=self._ids,
        )
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self._tracer = self._provider.get_tracer("meshward")
        self._span_context = SpanContext
        self._non_recording = NonRecordingSpan
        self._trace_flags = TraceFlags
        self._in_context = set_span_in_context
        self._server_kind = SpanKind.SERVER

    def export(
        self,
        trace: TraceContext,
        name: str,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, Any],
        error: bool,
    ) -> None:
        """Record the finished span of one hop (cheap: the batch processor exports later)."""
        context = None
        if trace.parent_id is not None:
            parent = self._span_context(
                int(trace.trace_id, 16),
                int(trace.parent_id, 16),
                is_remote=True,
                trace_flags=self._trace_flags(int(trace.flags, 16)),
            )
            context = self._in_context(self._non_recording(parent))
        self._ids.trace_id = int(trace.trace_id, 16)
        self._ids.span_id = int(trace.span_id, 16)
        span = self._tracer.start_span(
            name, context=context, kind=self._server_kind, attributes=attributes, start_time=start_ns
        )
        if error:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=end_ns)

    def shutdown(self) -> None:
        self._provider.shutdown()
