"""Canary analysis over real audit records: each kind of check rolls a bad canary back.

Records are what sidecars write (window events from :class:`WindowStats`, HTTP Activity with DLP
findings or denials, a Detection Finding), chained and ingested into a real
:class:`AuditStore`; :class:`AuditFacts` reads them and :func:`analysis.tick` decides.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from meshward.audit.chain import ChainWriter
from meshward.audit.store import AuditStore
from meshward.resources.modelroute import ModelRoute
from meshward.rollout import analysis
from meshward.rollout.facts import AuditFacts
from meshward.rollout.state import RolloutStore
from meshward.rollout.window import WindowStats

CANARY = "spiffe://demo.local/ns/llm/sa/chat-v2"
STABLE = "spiffe://demo.local/ns/llm/sa/chat-v1"
CALLER = "spiffe://demo.local/ns/web/sa/caller"


def route(checks: list[dict[str, Any]], threshold: int = 2) -> ModelRoute:
    return ModelRoute.model_validate(
        {
            "apiVersion": "meshward.dev/v1alpha1",
            "kind": "ModelRoute",
            "metadata": {"name": "chat", "namespace": "llm"},
            "spec": {
                "service": "chat",
                "subsets": {"stable": {"version": "v1"}, "canary": {"version": "v2"}},
                "rollout": {"steps": [10, 50], "interval": "1s", "threshold": threshold, "checks": checks},
            },
        }
    )


class Trail:
    """Sidecars' chains, ingested into a real store."""

    def __init__(self, tmp: Path) -> None:
        self.store = AuditStore(tmp)
        self.writers: dict[str, ChainWriter] = {}
        self.facts = AuditFacts(self.store)

    def send(self, source: str, event: dict[str, Any]) -> None:
        writer = self.writers.setdefault(source, ChainWriter())
        self.store.ingest_records(
            source, "c" + hashlib.sha256(source.encode()).hexdigest()[:16], [writer.next(event).line()]
        )

    def window(
        self, canary: tuple[int, int, int], stable: tuple[int, int, int] = (100, 0, 10), **mirror: int
    ) -> None:
        w = WindowStats("chat.llm")
        for subset, (n, errors, ms) in (("canary", canary), ("stable", stable)):
            for i in range(n):
                w.observe(subset, 503 if i < errors else 200, ms / 1000)
        for i in range(mirror.get("compared", 0)):
            w.compared_mirror("canary", i < mirror.get("differ", 0), False, 0.0)
        event = w.drain("llm/chat", 3, int(time.time() * 1000))
        assert event is not None
        self.send(CALLER, event)

    def http(self, source: str, actor: str, **extra: Any) -> None:
        event: dict[str, Any] = {"class_uid": 4002, "time": int(time.time() * 1000), "action_id": 1}
        event["actor"] = {"user": {"uid": actor}}
        event["unmapped"] = {"meshward": {}}
        if "findings" in extra:
            event["unmapped"]["meshward"]["dlp_findings"] = {"email": extra["findings"]}
        if extra.get("denied"):
            event["action_id"] = 2
        self.send(source, event)


def run(trail: Trail, r: ModelRoute, feed: Any, intervals: int = 3) -> analysis.RolloutStatus:
    now = time.time()
    status, _ = analysis.begin(r, now - 100)
    for _ in range(intervals):
        start = time.time()
        feed(trail)
        trail.facts.poll()
        window = trail.facts.window(
            "llm/chat", start - 0.001, time.time() + 0.001, frozenset({CANARY}), frozenset({STABLE})
        )
        status.last_eval = start
        t = analysis.tick(status, r.spec.rollout, window, time.time())  # type: ignore[arg-type]
        if t is not None:
            status.record(t, time.time())
        if status.state != "progressing":
            break
    return status


@pytest.mark.parametrize(
    ("check", "feed", "metric"),
    [
        ({"metric": "successRate", "min": 99}, lambda t: t.window((50, 10, 5)), "successRate"),
        ({"metric": "latencyP99", "maxMs": 200}, lambda t: t.window((50, 0, 900)), "latencyP99"),
        (
            {"metric": "dlpFindingsPer1k", "max": 0},
            lambda t: (t.window((20, 0, 5)), t.http(CANARY, CALLER, findings=2)),
            "dlpFindingsPer1k",
        ),
        (
            {"metric": "authzDenials", "max": 0},
            lambda t: (t.window((20, 0, 5)), t.http(STABLE, CANARY, denied=True)),
            "authzDenials",
        ),
        (  # drift: the canary's outputs differ from stable's on mirrored requests
            {"metric": "mirrorDiffRate", "max": 5},
            lambda t: t.window((20, 0, 5), compared=20, differ=12),
            "mirrorDiffRate",
        ),
        (
            {"metric": "alerts", "max": 0},
            lambda t: (
                t.window((20, 0, 5)),
                t.send(
                    "spiffe://demo.local/ns/mesh/sa/detector",
                    {
                        "class_uid": 2004,
                        "time": 0,
                        "finding_info": {"title": "score drift"},
                        "resources": [{"uid": CANARY}],
                    },
                ),
            ),
            "alerts",
        ),
    ],
)
def test_bad_canary_rolled_back(tmp_path: Path, check: dict[str, Any], feed: Any, metric: str) -> None:
    trail = Trail(tmp_path)
    status = run(trail, route([check]), feed)
    assert status.state == "rolledBack", status
    assert status.weight == 0 and metric in status.reason
    assert [h["event"] for h in status.history] == ["checkFailed", "rolledBack"]


def test_good_canary_promoted_and_stable_signals_do_not_count(tmp_path: Path) -> None:
    trail = Trail(tmp_path)
    checks = [
        {"metric": "successRate", "min": 99},
        {"metric": "dlpFindingsPer1k", "max": 0},
        {"metric": "authzDenials", "max": 0},
    ]

    def feed(t: Trail) -> None:
        t.window((30, 0, 5), stable=(100, 40, 5))  # stable's errors are not the canary's
        t.http(STABLE, CALLER, findings=3)  # stable's findings neither

    status = run(trail, route(checks), feed)
    assert status.state == "promoted" and status.weight == 100
    assert [h["event"] for h in status.history] == ["step", "promoted"]


def test_no_traffic_holds_the_step(tmp_path: Path) -> None:
    status = run(Trail(tmp_path), route([{"metric": "successRate", "min": 99}]), lambda t: None)
    assert status.state == "progressing" and status.step == 1 and "waiting for traffic" in status.reason


def test_operator_commands_and_state_survives_a_restart(tmp_path: Path) -> None:
    r = route([])
    status, _ = analysis.begin(r, 0.0)
    assert analysis.command(status, "pause", 1.0, "ops").event == "paused"
    with pytest.raises(ValueError, match="not progressing"):
        analysis.command(status, "pause", 1.0, "ops")
    analysis.command(status, "resume", 2.0, "ops")
    assert analysis.command(status, "abort", 3.0, "ops").weight == 0
    store = RolloutStore(tmp_path / "rollouts.db")
    store.save(status)
    again = RolloutStore(tmp_path / "rollouts.db").load()["llm/chat"]
    assert again == status and again.state == "rolledBack" and "aborted by ops" in again.reason
    assert (tmp_path / "rollouts.db").stat().st_mode & 0o777 == 0o600
