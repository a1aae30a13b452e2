"""Observed traffic from the sidecars' Prometheus metrics: edges, nodes, windowed rates, p99.

Each sidecar reports what it RECEIVED (the chain runs inbound), so one scrape of every
sidecar's ``/stats/prometheus`` sees every call once, from its destination. Counters are
cumulative since each sidecar started; :class:`TrafficHistory` keeps timed samples so rates
(requests/s over a window) are differences between two samples.

Pure parsing and arithmetic (:func:`parse_sample`, :func:`p99`, :meth:`TrafficHistory.window`)
are apart from the I/O (:func:`scrape`), so they are tested with tables.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["EdgeCounts", "NodeCounts", "Sample", "TrafficHistory", "p99", "parse_sample", "scrape"]

_FLAGS_DENIED = {"RBAC"}
_FLAGS_BLOCKED = {"RL", "DLP"}


@dataclass(slots=True)
class EdgeCounts:
    """Cumulative counts of one (source identity → destination workload) edge."""

    requests: float = 0.0
    errors: float = 0.0  # 5xx
    denied: float = 0.0  # refused by authorization
    blocked: float = 0.0  # refused by a rate limit or DLP
    plaintext: float = 0.0  # requests without mTLS (PERMISSIVE)
    tokens: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count
    models: set[str] = field(default_factory=set)
    operations: set[str] = field(default_factory=set)

    def add(self, other: EdgeCounts, sign: float = 1.0) -> None:
        self.requests += sign * other.requests
        self.errors += sign * other.errors
        self.denied += sign * other.denied
        self.blocked += sign * other.blocked
        self.plaintext += sign * other.plaintext
        self.tokens += sign * other.tokens
        for bound, n in other.buckets.items():
            self.buckets[bound] = self.buckets.get(bound, 0.0) + sign * n
        self.models |= other.models
        self.operations |= other.operations


@dataclass(slots=True)
class NodeCounts:
    """Per destination sidecar: DLP findings by detector type."""

    dlp_findings: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Sample:
    """Every sidecar's counters at one instant: edges keyed (source URI, destination ns/name)."""

    at: float
    edges: dict[tuple[str, str], EdgeCounts] = field(default_factory=dict)
    nodes: dict[str, NodeCounts] = field(default_factory=dict)


def _edge(sample: Sample, source: str, destination: str) -> EdgeCounts:
    edge = sample.edges.get((source, destination))
    if edge is None:
        edge = sample.edges[(source, destination)] = EdgeCounts()
    return edge


def parse_sample(texts: Mapping[str, str], at: float, trust_domain: str) -> Sample:
    """``texts``: workload ``ns/name`` → its sidecar's ``/stats/prometheus`` text."""
    sample = Sample(at)
    for workload, text in texts.items():
        node = sample.nodes.setdefault(workload, NodeCounts())
        for family in text_string_to_metric_families(text):
            name = family.name.removesuffix("_total")  # the text format names counters either way
            if name == "meshward_requests":
                for s in family.samples:
                    if not s.name.endswith("_total"):
                        continue
                    labels = s.labels
                    source = _source(labels, trust_domain)
                    edge = _edge(sample, source, workload)
                    edge.requests += s.value
                    flags = labels.get("response_flags", "-")
                    if labels.get("response_code", "").startswith("5") and flags not in _FLAGS_BLOCKED:
                        edge.errors += s.value
                    if flags in _FLAGS_DENIED:
                        edge.denied += s.value
                    elif flags in _FLAGS_BLOCKED:
                        edge.blocked += s.value
                    if labels.get("connection_security_policy") != "mutual_tls":
                        edge.plaintext += s.value
                    if labels.get("model") not in (None, "", "unknown"):
                        edge.models.add(labels["model"])
                    if labels.get("ai_operation") not in (None, "", "other"):
                        edge.operations.add(labels["ai_operation"])
            elif name == "meshward_request_duration_seconds":
                for s in family.samples:
                    if s.name.endswith("_bucket"):
                        edge = _edge(sample, _source(s.labels, trust_domain), workload)
                        bound = float(s.labels["le"])
                        edge.buckets[bound] = edge.buckets.get(bound, 0.0) + s.value
            elif name == "gen_ai_client_token_usage":
                for s in family.samples:
                    if s.name.endswith("_sum"):
                        principal = s.labels.get("source_principal", "")
                        source = f"spiffe://{principal}" if principal and principal != "other" else "unknown"
                        _edge(sample, source, workload).tokens += s.value
            elif name == "meshward_dlp_findings":
                for s in family.samples:
                    if s.name.endswith("_total"):
                        detector = s.labels.get("detector", "?")
                        node.dlp_findings[detector] = node.dlp_findings.get(detector, 0.0) + s.value
    return sample


def _source(labels: Mapping[str, str], trust_domain: str) -> str:
    principal = labels.get("source_principal", "unknown")
    if principal in ("", "unknown"):
        return "unknown"  # plaintext callers (PERMISSIVE) have no identity
    return f"spiffe://{principal}"


def p99(buckets: Mapping[float, float]) -> float | None:
    """The 99th percentile (seconds) from cumulative histogram buckets: the bound that holds 99 %.

    Like Prometheus' ``histogram_quantile``, interpolated linearly inside the bucket.
    """
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = 0.99 * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            inside = count - lower_count
            fraction = (rank - lower_count) / inside if inside > 0 else 1.0
            return lower_bound + (bound - lower_bound) * fraction
        lower_bound, lower_count = bound, count
    return lower_bound


def scrape(admin: str, timeout: float = 3.0) -> str:
    """One sidecar's ``/stats/prometheus`` (admin ``host:port`` on loopback)."""
    host, _, port = admin.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", "/stats/prometheus")
        resp = conn.getresponse()
        body = resp.read(16 << 20)
        if resp.status != 200:
            raise OSError(f"{admin}/stats/prometheus answered {resp.status}")
        return body.decode("utf-8", "replace")
    finally:
        conn.close()


class TrafficHistory:
    """Timed samples of the mesh's counters (kept ``keep`` seconds) and windows over them."""

    def __init__(self, keep: float = 900.0, max_samples: int = 600) -> None:
        self.keep = keep
        self.max_samples = max_samples
        self._samples: list[Sample] = []
        self._lock = threading.Lock()

    def add(self, sample: Sample) -> None:
        with self._lock:
            self._samples.append(sample)
            cutoff = sample.at - self.keep
            self._samples = [s for s in self._samples if s.at >= cutoff][-self.max_samples :]

    def sample(self, sidecars: Mapping[str, str], trust_domain: str, now: float | None = None) -> Sample:
        """Scrape every sidecar now and keep the sample (an unreachable sidecar is skipped)."""
        texts: dict[str, str] = {}
        for workload, admin in sidecars.items():
            try:
                texts[workload] = scrape(admin)
            except (OSError, http.client.HTTPException, ValueError):
                continue
        sample = parse_sample(texts, time.time() if now is None else now, trust_domain)
        self.add(sample)
        return sample

    def window(
        self, latest: Sample, seconds: float
    ) -> tuple[float | None, dict[tuple[str, str], EdgeCounts], dict[tuple[str, str], float]]:
        """Counts within the last ``seconds`` ending at ``latest``, and each edge's requests/s.

        Returns (span, counts, rates). The counts start at the newest kept sample at least
        ``seconds`` old; with none (the dashboard is younger than the window) they are the
        counters since each sidecar started and span is None. Rates are measured from the
        oldest sample inside the window (none yet: no rate).
        """
        with self._lock:
            samples = list(self._samples)
        cutoff = latest.at - seconds
        older = [s for s in samples if s.at <= cutoff]
        inside = [s for s in samples if cutoff < s.at <= latest.at - 0.5]
        base = older[-1] if older else None
        counts = _difference(latest, base)
        rates: dict[tuple[str, str], float] = {}
        rate_base = base or (inside[0] if inside else None)
        if rate_base is not None:
            elapsed = latest.at - rate_base.at
            for key, edge in _difference(latest, rate_base).items():
                rates[key] = edge.requests / elapsed if elapsed > 0 else 0.0
        return (None if base is None else latest.at - base.at), counts, rates


def _difference(latest: Sample, base: Sample | None) -> dict[tuple[str, str], EdgeCounts]:
    delta: dict[tuple[str, str], EdgeCounts] = {}
    for key, edge in latest.edges.items():
        d = _copy(edge)
        before = None if base is None else base.edges.get(key)
        if before is not None:
            d.add(before, -1.0)
            if d.requests < 0:  # the sidecar restarted: its counters began again
                d = _copy(edge)
        delta[key] = d
    return delta


def _copy(edge: EdgeCounts) -> EdgeCounts:
    out = EdgeCounts()
    out.add(edge)
    return out


def summarize(edges: Iterable[tuple[tuple[str, str], EdgeCounts]]) -> dict[str, Any]:
    """Totals over edges (for headers and ``meshward top``'s footer)."""
    total = EdgeCounts()
    for _, edge in edges:
        total.add(edge)
    return {"requests": total.requests, "errors": total.errors, "denied": total.denied}
