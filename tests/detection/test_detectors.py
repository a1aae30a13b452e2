"""The control plane's detectors on plain reports and a simulated clock (tables + properties)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.detection.detectors import NEW_PAIR_WARMUP, Detectors, SlidingSum
from meshward.detection.settings import DEFAULTS, detection_for
from meshward.resources.loader import load_text

CALLER = "spiffe://demo.local/ns/web/sa/webapp"
T0 = 1_800_000_000.0


def policy(detectors: str) -> Any:
    text = f"""
apiVersion: meshward.dev/v1alpha1
kind: DetectionPolicy
metadata: {{name: p, namespace: ml}}
spec:
  selector: {{matchLabels: {{app: m}}}}
  detectors: {detectors}
"""
    return detection_for(load_text(text), "ml", {"app": "m"})


DEFAULT = detection_for([], "ml", {"app": "m"})
ALL = policy(
    "[{type: volume, maxRequestsPerMinute: 100}, {type: auth, maxRefusalsPerMinute: 10},"
    " {type: violations, maxDenialsPerMinute: 20, maxDistinctPathsPerMinute: 10},"
    " {type: exfiltration, maxFindingsPerMinute: 5}, {type: extraction}, {type: drift, baseline: 50, window: 50}]"
)


def report(callers: dict[str, dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"workload": "ml/m", "version": "v1", "window": [0, 1], "callers": callers or {}, **extra}


def run(reports: list[tuple[float, dict[str, Any]]], detection: Any = ALL) -> list[Any]:
    d = Detectors()
    out = []
    for t, r in reports:
        out.extend(d.ingest(r, detection, T0 + t))
    return out


def test_defaults_apply_without_a_policy() -> None:
    assert set(DEFAULT.detectors) == {"auth", "violations", "volume"}
    assert (
        DEFAULT.params("violations")["maxDenialsPerMinute"] == DEFAULTS["violations"]["maxDenialsPerMinute"]
    )
    assert ALL.params("violations")["maxDenialsPerMinute"] == 20 and ALL.policy["drift"] == "ml/p"


@pytest.mark.parametrize(
    ("name", "reports", "detector", "subject"),
    [
        (
            "denial burst",
            [(i * 0.5, report({CALLER: {"requests": 5, "denials": 5, "samples": ["r1"]}})) for i in range(5)],
            "violations",
            CALLER,
        ),
        (
            "enumeration",
            [
                (i, report({CALLER: {"requests": 3, "paths": [f"/p{i}a", f"/p{i}b", f"/p{i}c"]}}))
                for i in range(5)
            ],
            "violations",
            CALLER,
        ),
        (
            "handshakes",
            [(i, report(handshakes={"10.0.0.9": {"no_cert": 4}})) for i in range(4)],
            "auth",
            "address:10.0.0.9",
        ),
        (
            "records leaving",
            [(i, report({CALLER: {"requests": 1, "findings_out": 3}})) for i in range(3)],
            "exfiltration",
            CALLER,
        ),
        ("export limit", [(0, report({CALLER: {"requests": 1, "export_hits": 1}}))], "exfiltration", CALLER),
        ("request ceiling", [(i, report({CALLER: {"requests": 40}})) for i in range(3)], "volume", CALLER),
        (
            "PRADA alarm",
            [(0, report(extraction={CALLER: {"alarm": True, "w": 0.7, "threshold": 0.9, "queries": 80}}))],
            "extraction",
            CALLER,
        ),
    ],
)
def test_each_detector_raises_on_its_attack(
    name: str, reports: list[tuple[float, dict[str, Any]]], detector: str, subject: str
) -> None:
    signals = run(reports)
    assert any(s.detector == detector and s.subject == subject for s in signals), name
    assert all(s.workload == "ml/m" for s in signals)


@pytest.mark.parametrize(
    ("prompts", "raised"),
    [
        ({"prompts": 60, "distinct": 60, "top_prefix": 55}, True),  # templated and all distinct
        ({"prompts": 60, "distinct": 60, "top_prefix": 5}, False),  # varied conversation
        ({"prompts": 60, "distinct": 10, "top_prefix": 60}, False),  # the same few questions again
        ({"prompts": 20, "distinct": 20, "top_prefix": 20}, False),  # too few to say
    ],
)
def test_llm_extraction_by_prompt_diversity(prompts: dict[str, int], raised: bool) -> None:
    signals = run([(0, report(prompts={CALLER: prompts}))])
    assert any(s.detector == "extraction" for s in signals) is raised


def test_quiet_traffic_raises_nothing() -> None:
    reports = [
        (
            i,
            report(
                {
                    CALLER: {
                        "requests": 2,
                        "denials": int(i % 20 == 0),
                        "paths": ["/v2/models/m/infer"],
                        "bytes_out": 2000,
                    }
                }
            ),
        )
        for i in range(0, 600, 2)
    ]
    assert run(reports) == []


def test_denials_outside_the_minute_do_not_add_up() -> None:
    reports = [(i * 10.0, report({CALLER: {"requests": 3, "denials": 3}})) for i in range(30)]  # 18 a minute
    assert not any(s.detector == "violations" for s in run(reports))


def test_volume_anomaly_against_a_seasonal_baseline() -> None:
    """A simulated day with a daily cycle (per-minute reports): no alert; a 10x burst: an alert."""
    rng = np.random.default_rng(3)
    d = Detectors()
    quiet = policy("[{type: volume}]")
    signals = []
    for minute in range(24 * 60):
        rate = 60 + 40 * math.sin(2 * math.pi * minute / (24 * 60))
        n = int(rng.poisson(rate / 6))
        for k in range(6):
            signals += d.ingest(report({CALLER: {"requests": n}}), quiet, T0 + minute * 60 + k * 10)
    assert [s for s in signals if s.detector == "volume"] == []
    burst_start = T0 + 24 * 3600
    for k in range(10):
        signals += d.ingest(report({CALLER: {"requests": 200}}), quiet, burst_start + k)
    raised = [s for s in signals if s.detector == "volume" and s.subject == CALLER]
    assert raised and raised[0].evidence["score"] > 10


def test_a_new_caller_is_noticed_after_the_warmup() -> None:
    reports = [
        (0.0, report({CALLER: {"requests": 1}})),
        (NEW_PAIR_WARMUP + 1, report({"spiffe://demo.local/ns/x/sa/new": {"requests": 1}})),
    ]
    signals = [s for s in run(reports) if s.evidence.get("kind") == "new_pair"]
    assert [s.subject for s in signals] == ["spiffe://demo.local/ns/x/sa/new"] and signals[
        0
    ].severity == "low"


def test_drift_names_the_new_version() -> None:
    d = Detectors()
    rng = np.random.default_rng(4)
    signals = []
    for i in range(20):  # baseline: v1 answers class 0 about 80% of the time
        labels = rng.choice(["0", "1"], size=10, p=[0.8, 0.2])
        outputs = {k: int((labels == k).sum()) for k in ("0", "1")}
        signals += d.ingest(report(models={"fraud@v1": {"outputs": outputs, "requests": 10}}), ALL, T0 + i)
    assert signals == []
    for i in range(10):  # v2 answers class 1 mostly
        labels = rng.choice(["0", "1"], size=10, p=[0.2, 0.8])
        outputs = {k: int((labels == k).sum()) for k in ("0", "1")}
        signals += d.ingest(
            report(models={"fraud@v2": {"outputs": outputs, "requests": 10}}), ALL, T0 + 100 + i
        )
    drift = [s for s in signals if s.detector == "drift"]
    assert (
        drift and drift[0].subject == "model:ml/m/fraud@v2" and drift[0].evidence["baseline_version"] == "v1"
    )
    assert drift[0].evidence["psi"] > 0.25


def test_refused_csrs_and_revoked_renewals() -> None:
    d = Detectors()
    signals = []
    for i in range(6):
        signals += d.csr_refused("10.1.1.1", "join token unknown", None, DEFAULT, T0 + i)
    assert any(s.subject == "address:10.1.1.1" for s in signals)
    revoked = d.csr_refused(
        "10.1.1.2", "certificate serial abc is revoked", "spiffe://demo.local/ns/a/sa/b", DEFAULT, T0
    )
    assert (
        revoked[0].subject == "spiffe://demo.local/ns/a/sa/b"
        and revoked[0].evidence["kind"] == "revoked_renewal"
    )


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 300), st.integers(0, 100)), max_size=100))
def test_sliding_sum_is_the_sum_of_the_last_minute(points: list[tuple[float, int]]) -> None:
    s = SlidingSum(horizon=60.0)
    now = 0.0
    seen: list[tuple[float, int]] = []
    for dt_, v in points:
        now += dt_ / 10
        seen.append((now, v))
        total = s.add("x", now, v)
        assert total == pytest.approx(sum(val for t, val in seen if t > now - 60.0))


def test_state_is_bounded() -> None:
    d = Detectors()
    for i in range(40):  # one caller probing 2,560 paths within a minute
        paths = [f"/p{i}-{j}" for j in range(64)]
        d.ingest(report({CALLER: {"requests": 64, "paths": paths}}), ALL, T0 + i)
    assert len(d.paths[CALLER]) == 1000
    sizes = d.sizes()
    assert set(sizes) == {"volume", "auth", "violations", "exfiltration", "extraction", "drift"}
    small = SlidingSum(max_subjects=50)
    for i in range(500):
        small.add(f"s{i}", T0, 1.0)
    assert len(small.series) == 50 and "s499" in small.series and "s0" not in small.series
