"""The sidecar's request metrics (served on the admin port at ``/stats/prometheus``).

- ``meshward_requests_total`` and ``meshward_request_duration_seconds`` (histogram), labelled as
  Istio's ``istio_requests_total`` (reporter, source_workload, source_namespace,
  source_principal, destination_workload, destination_service, response_code,
  connection_security_policy, response_flags) plus ``model`` and ``ai_operation``;
- ``meshward_authz_decisions_total{policy,decision}`` — allowed / denied / dry_run_allowed /
  dry_run_denied, exported from the authz filter's counters (``meshward.filters.authz.counters``,
  policy ``-`` = no policy decided: default deny or no ALLOW match);
- ``meshward_dlp_findings_total{detector}`` and ``meshward_dlp_blocked_total{policy}``;
- ``meshward_certificate_expiration_timestamp_seconds`` — the workload SVID's notAfter;
- ``meshward_audit_records_total``, ``meshward_audit_pending_records``,
  ``meshward_access_log_dropped_lines_total``.

Rate-limit counters and ``gen_ai_client_token_usage`` belong to the rate-limit filter
(:mod:`meshward.ratelimit.telemetry`) and are not defined twice.

Hot path: like :mod:`meshward.proxy.stats`, counts are plain integers in dicts keyed by the
label tuple (no lock, no prometheus child lookup); :class:`TelemetryCollector` turns them into
metric families only when scraped. Cardinality stays bounded: paths are never labels, model
names go through :class:`BoundedLabel` (names seen first, up to a cap, then ``other``).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["DURATION_BUCKETS", "REQUEST_LABELS", "BoundedLabel", "TelemetryCollector", "TelemetryMetrics"]

REQUEST_LABELS = (
    "reporter",
    "source_workload",
    "source_namespace",
    "source_principal",
    "destination_workload",
    "destination_service",
    "response_code",
    "connection_security_policy",
    "response_flags",
    "model",
    "ai_operation",
)
# Istio's request-duration buckets (seconds), extended for long LLM generations.
DURATION_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
_BUCKET_NAMES = [*(repr(b) for b in DURATION_BUCKETS), "+Inf"]
_LABEL_SAFE = re.compile(r"^[A-Za-z0-9._:/@+-]{1,64}$")
_MAX_SERIES = 20_000  # a last guard against unbounded growth (labels are bounded before this)


class BoundedLabel:
    """Maps free text (a model name from a request) to a label value from a bounded set."""

    __slots__ = ("cap", "known", "other")

    def __init__(self, cap: int = 50, other: str = "other") -> None:
        self.known: set[str] = set()
        self.cap = cap
        self.other = other

    def __call__(self, value: str | None) -> str:
        if not value:
            return "unknown"
        if value in self.known:
            return value
        if len(self.known) < self.cap and _LABEL_SAFE.match(value):
            self.known.add(value)
            return value
        return self.other


class TelemetryMetrics:
    """Plain counters of one sidecar process (outlive config generations)."""

    def __init__(self) -> None:
        # labels -> [count, sum, bucket_0, ..., bucket_n, bucket_inf] (non-cumulative buckets)
        self.requests: dict[tuple[str, ...], list[float]] = {}
        self.dlp_findings: Counter[str] = Counter()
        self.dlp_blocked: Counter[str] = Counter()
        self.audit_records = 0
        self.access_log_dropped = 0
        self.models = BoundedLabel()
        self.detectors = BoundedLabel(cap=100)

    def observe_request(self, labels: tuple[str, ...], seconds: float) -> None:
        series = self.requests.get(labels)
        if series is None:
            if len(self.requests) >= _MAX_SERIES:
                return
            series = self.requests[labels] = [0, 0.0, *([0] * (len(DURATION_BUCKETS) + 1))]
        series[0] += 1
        series[1] += seconds
        series[2 + bisect_left(DURATION_BUCKETS, seconds)] += 1


class TelemetryCollector(Collector):
    """Exports :class:`TelemetryMetrics` at scrape time; ``gauges`` supplies live values."""

    def __init__(
        self,
        metrics: TelemetryMetrics,
        gauges: Callable[[], dict[str, float | None]],
        authz_counters: Callable[[], dict[str, dict[str, int]] | None] = lambda: None,
    ) -> None:
        self.metrics = metrics
        self.gauges = gauges
        self.authz_counters = authz_counters

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        series = list(m.requests.items())
        total = CounterMetricFamily(
            "meshward_requests", "Requests handled by the sidecar (Istio labels + AI)", labels=REQUEST_LABELS
        )
        duration = HistogramMetricFamily(
            "meshward_request_duration_seconds",
            "Time from the request head to the end of the response",
            labels=REQUEST_LABELS,
        )
        for labels, values in series:
            total.add_metric(list(labels), values[0])
            cumulative, buckets = 0.0, []
            for name, count in zip(_BUCKET_NAMES, values[2:], strict=True):
                cumulative += count
                buckets.append((name, cumulative))
            duration.add_metric(list(labels), buckets, values[1])
        yield total
        yield duration
        authz = CounterMetricFamily(
            "meshward_authz_decisions",
            "Authorization decisions by deciding policy (allowed, denied, dry_run_allowed, dry_run_denied)",
            labels=["policy", "decision"],
        )
        for decision, by_policy in list((self.authz_counters() or {}).items()):
            for policy, n in list(by_policy.items()):
                authz.add_metric([policy, decision], n)
        yield authz
        findings = CounterMetricFamily(
            "meshward_dlp_findings", "Sensitive data found by DLP, by detector", labels=["detector"]
        )
        for detector, n in list(m.dlp_findings.items()):
            findings.add_metric([detector], n)
        yield findings
        blocked = CounterMetricFamily("meshward_dlp_blocked", "Exchanges blocked by DLP", labels=["policy"])
        for policy, n in list(m.dlp_blocked.items()):
            blocked.add_metric([policy], n)
        yield blocked
        yield CounterMetricFamily(
            "meshward_audit_records", "Audit records written to the spool", value=m.audit_records
        )
        yield CounterMetricFamily(
            "meshward_access_log_dropped_lines",
            "Access-log lines dropped because the writer fell behind",
            value=m.access_log_dropped,
        )
        gauges = self.gauges()
        expiry = gauges.get("certificate_expiration")
        if expiry is not None:
            yield GaugeMetricFamily(
                "meshward_certificate_expiration_timestamp_seconds",
                "notAfter of the sidecar's workload certificate (Unix time)",
                value=expiry,
            )
        pending = gauges.get("audit_pending")
        if pending is not None:
            yield GaugeMetricFamily(
                "meshward_audit_pending_records",
                "Audit records not yet acknowledged by the control plane",
                value=pending,
            )
