"""PRADA flags synthetic extraction queries and not benign ones (statistically), within bounds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.models.fraud import train
from meshward.detection.prada import PradaMonitor, PradaSettings
from tests.detection.traffic import benign_queries, extraction_queries


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return train()[0]


def first_alarm(model, queries: list[list[float]], monitor: PradaMonitor | None = None) -> int | None:  # type: ignore[no-untyped-def]
    monitor = monitor or PradaMonitor(PradaSettings(threshold=0.90, min_queries=50))
    labels = model.predict(np.array(queries))
    for i, (q, label) in enumerate(zip(queries, labels, strict=True)):
        if monitor.observe("caller", q, str(label)).alarm:
            return i + 1
    return None


def test_benign_callers_raise_no_alarm(model) -> None:  # type: ignore[no-untyped-def]
    alarms = [first_alarm(model, benign_queries(300, seed=s)) for s in range(10)]
    assert alarms == [None] * 10


def test_extraction_attacks_are_flagged_within_200_queries(model) -> None:  # type: ignore[no-untyped-def]
    alarms = [first_alarm(model, extraction_queries(300, seed=s)) for s in range(10)]
    assert all(a is not None and a <= 200 for a in alarms), alarms


def test_an_attacker_is_flagged_while_a_benign_caller_is_not(model) -> None:  # type: ignore[no-untyped-def]
    monitor = PradaMonitor(PradaSettings())
    benign, attack = benign_queries(200, seed=9), extraction_queries(200, seed=9)
    labels_b, labels_a = model.predict(np.array(benign)), model.predict(np.array(attack))
    flagged: dict[str, bool] = {"benign": False, "attacker": False}
    for qb, lb, qa, la in zip(benign, labels_b, attack, labels_a, strict=True):
        flagged["benign"] |= monitor.observe("benign", qb, str(lb)).alarm
        flagged["attacker"] |= monitor.observe("attacker", qa, str(la)).alarm
    assert flagged == {"benign": False, "attacker": True}


def test_repeated_queries_are_not_an_attack(model) -> None:  # type: ignore[no-untyped-def]
    queries = benign_queries(100) + [benign_queries(1)[0]] * 200
    assert first_alarm(model, queries) is None


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 600), st.integers(2, 40))
def test_memory_is_bounded(queries: int, callers: int) -> None:
    s = PradaSettings(max_samples=16, window=50, min_queries=10, max_callers=8, max_classes=2)
    monitor = PradaMonitor(s)
    rng = np.random.default_rng(queries)
    for i in range(queries):
        monitor.observe(f"c{i % callers}", list(rng.normal(size=4)), str(i % 3))
    assert len(monitor.callers) <= 8
    for state in monitor.callers.values():
        assert len(state.classes) <= 2 and len(state.distances) <= 50
        assert state.size() <= 2 * 16 * 4 + 50
