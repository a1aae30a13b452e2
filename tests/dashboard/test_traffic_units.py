"""Observed traffic from Prometheus text: edges, denials, p99, windows (tables + properties)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshward.dashboard.traffic import Sample, TrafficHistory, p99, parse_sample


def _series(
    source: str, code: str, flags: str, n: int, policy: str = "mutual_tls", model: str = "unknown"
) -> str:
    labels = (
        f'reporter="destination",source_workload="x",source_namespace="x",source_principal="{source}",'
        f'destination_workload="tiny-model",destination_service="tiny-model.ml",response_code="{code}",'
        f'connection_security_policy="{policy}",response_flags="{flags}",model="{model}",ai_operation="chat"'
    )
    return f"meshward_requests_total{{{labels}}} {n}\n"


TEXT = (
    "# TYPE meshward_requests counter\n"
    + _series("demo.local/ns/web/sa/webapp", "200", "-", 7, model="gpt-x")
    + _series("demo.local/ns/web/sa/webapp", "503", "UH", 1)
    + _series("demo.local/ns/jobs/sa/batch", "403", "RBAC", 2)
    + _series("unknown", "200", "-", 3, policy="none")
    + "# TYPE meshward_dlp_findings counter\n"
    + 'meshward_dlp_findings_total{detector="email"} 4\n'
)


def test_parse_sample_counts_each_edge_from_its_destination() -> None:
    sample = parse_sample({"ml/tiny-model": TEXT}, 100.0, "demo.local")
    web = sample.edges[("spiffe://demo.local/ns/web/sa/webapp", "ml/tiny-model")]
    assert (web.requests, web.errors, web.denied, web.plaintext) == (8, 1, 0, 0)
    assert web.models == {"gpt-x"} and web.operations == {"chat"}
    batch = sample.edges[("spiffe://demo.local/ns/jobs/sa/batch", "ml/tiny-model")]
    assert (batch.requests, batch.denied, batch.errors) == (2, 2, 0)
    outside = sample.edges[("unknown", "ml/tiny-model")]
    assert outside.plaintext == outside.requests == 3
    assert sample.nodes["ml/tiny-model"].dlp_findings == {"email": 4}


@pytest.mark.parametrize(
    ("buckets", "expected"),
    [
        ({}, None),
        ({0.1: 0, math.inf: 0}, None),
        ({0.1: 100, math.inf: 100}, 0.099),  # all in the first bucket: interpolated from 0
        ({0.01: 50, 0.1: 100, math.inf: 100}, 0.0982),
        ({0.01: 99, 0.1: 99, math.inf: 100}, 0.01),
        ({0.5: 0, 1.0: 0, math.inf: 10}, 1.0),  # beyond the last bound: the last bound
    ],
)
def test_p99(buckets: dict[float, float], expected: float | None) -> None:
    got = p99(buckets)
    assert got == expected if expected is None else got == pytest.approx(expected, rel=1e-3)


@given(st.lists(st.integers(0, 1000), min_size=1, max_size=12))
def test_p99_lies_within_the_bucket_bounds(counts: list[int]) -> None:
    bounds = [0.001 * 2**i for i in range(len(counts))]
    cumulative, total = {}, 0
    for bound, n in zip(bounds, counts, strict=True):
        total += n
        cumulative[bound] = float(total)
    cumulative[math.inf] = float(total)
    got = p99(cumulative)
    if total == 0:
        assert got is None
    else:
        assert got is not None and 0.0 <= got <= bounds[-1]


def test_window_subtracts_the_sample_at_its_start_and_rates_follow() -> None:
    history = TrafficHistory()

    def at(t: float, n: int) -> Sample:
        return parse_sample({"ml/tiny-model": _series("demo.local/ns/web/sa/webapp", "200", "-", n)}, t, "d")

    for t, n in ((0.0, 10), (50.0, 20), (100.0, 40)):
        history.add(at(t, n))
    latest = at(160.0, 70)
    history.add(latest)
    key = ("spiffe://demo.local/ns/web/sa/webapp", "ml/tiny-model")
    span, counts, rates = history.window(latest, 60.0)  # starts at the sample of t=100
    assert span == 60.0 and counts[key].requests == 30 and rates[key] == pytest.approx(0.5)
    span, counts, rates = history.window(latest, 1000.0)  # older than every sample: since start
    assert span is None and counts[key].requests == 70 and rates[key] == pytest.approx(60 / 160)
    restarted = at(170.0, 5)  # the sidecar restarted: its counters began again
    history.add(restarted)
    _, counts, _ = history.window(restarted, 60.0)
    assert counts[key].requests == 5
