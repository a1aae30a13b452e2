"""The sidecar's own counters: plain integers on the hot path, exported at scrape time.

Incrementing a prometheus_client Counter takes a lock; a dict of ints does not. The
:class:`ProxyCollector` turns the integers into metric families when ``/stats/prometheus`` is
scraped, in the same registry as the filters' metrics.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["PLAINTEXT_SOURCES_MAX", "ProxyCollector", "ProxyStats"]

PLAINTEXT_SOURCES_MAX = 1024


class ProxyStats:
    """Counters of one sidecar process."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int, str]] = Counter()  # (side, status, flag)
        self.connections: Counter[str] = Counter()  # side
        self.active: Counter[str] = Counter()  # side → open downstream connections
        self.tls_failures: Counter[str] = Counter()  # reason
        # (source address, reason) of refused handshakes, drained by the detection reporter
        self.tls_refused_sources: Counter[tuple[str, str]] = Counter()
        self.protocol_errors: Counter[tuple[str, int]] = Counter()  # (side, status)
        self.config_rejected = 0
        self.bytes_in: Counter[str] = Counter()
        self.bytes_out: Counter[str] = Counter()
        # PERMISSIVE: plaintext connections accepted, by source address (bounded), so a
        # migration to STRICT can see who still sends plaintext.
        self.plaintext: Counter[str] = Counter()

    def count_plaintext(self, source: str) -> None:
        if source not in self.plaintext and len(self.plaintext) >= PLAINTEXT_SOURCES_MAX:
            source = "other"
        self.plaintext[source] += 1

    def tls_refused(self, source: str, reason: str) -> None:
        """Count a refused handshake by reason and (bounded) by source address."""
        self.tls_failures[reason] += 1
        if len(self.tls_refused_sources) < 4096:
            self.tls_refused_sources[(source, reason)] += 1


class ProxyCollector(Collector):
    def __init__(self, stats: ProxyStats, gauges: Callable[[], dict[str, float]]) -> None:
        self.stats = stats
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        req = CounterMetricFamily(
            "meshward_proxy_requests", "Requests handled by the sidecar", labels=["side", "code", "flags"]
        )
        for (side, status, flag), n in sorted(s.requests.items()):
            req.add_metric([side, str(status), flag], n)
        yield req
        cx = CounterMetricFamily(
            "meshward_proxy_downstream_connections", "Accepted connections", labels=["side"]
        )
        for side, n in sorted(s.connections.items()):
            cx.add_metric([side], n)
        yield cx
        act = GaugeMetricFamily(
            "meshward_proxy_downstream_active", "Open downstream connections", labels=["side"]
        )
        for side, n in sorted(s.active.items()):
            act.add_metric([side], n)
        yield act
        tls = CounterMetricFamily(
            "meshward_proxy_tls_refused", "Inbound connections refused at the TLS layer", labels=["reason"]
        )
        for reason, n in sorted(s.tls_failures.items()):
            tls.add_metric([reason], n)
        yield tls
        plain = CounterMetricFamily(
            "meshward_proxy_plaintext_connections",
            "Plaintext connections accepted in PERMISSIVE mode, by source address",
            labels=["source"],
        )
        for source, n in sorted(s.plaintext.items()):
            plain.add_metric([source], n)
        yield plain
        perr = CounterMetricFamily(
            "meshward_proxy_protocol_errors", "Requests refused by the strict parser", labels=["side", "code"]
        )
        for (side, status), n in sorted(s.protocol_errors.items()):
            perr.add_metric([side, str(status)], n)
        yield perr
        for name, series in (("received", s.bytes_in), ("sent", s.bytes_out)):
            fam = CounterMetricFamily(
                f"meshward_proxy_body_bytes_{name}", f"Body bytes {name}", labels=["side"]
            )
            for side, n in sorted(series.items()):
                fam.add_metric([side], n)
            yield fam
        yield CounterMetricFamily(
            "meshward_proxy_config_rejected", "Snapshots that failed to compile", value=s.config_rejected
        )
        for name, value in sorted(self.gauges().items()):
            yield GaugeMetricFamily(f"meshward_proxy_{name}", name.replace("_", " "), value=value)
