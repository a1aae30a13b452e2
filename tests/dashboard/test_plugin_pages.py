"""The Alerts and Rollouts pages that the detection and rollout packages plug into the dashboard."""

from __future__ import annotations

import time
from pathlib import Path

from meshward.cli.main import main
from meshward.dashboard.pages import page
from meshward.dashboard.view import MeshView
from meshward.detection.signals import Alert
from meshward.detection.store import DetectionStore
from meshward.rollout.analysis import RolloutStatus
from meshward.rollout.state import RolloutStore


def _view(tmp_path: Path) -> MeshView:
    state = tmp_path / "state"
    assert main(["init", "--state", str(state), "--trust-domain", "demo.local"]) == 0
    return MeshView(state)


def test_pages_say_when_nothing_happened_yet(tmp_path: Path) -> None:
    view = _view(tmp_path)
    for slug in ("alerts", "rollouts"):
        found = page(slug)
        assert found is not None
        html = found.render(view, {})
        assert "Not available" not in html and "No " in html


def test_alerts_page_lists_alerts_escaped(tmp_path: Path) -> None:
    view = _view(tmp_path)
    store = DetectionStore(view.state.path / "detection.db")
    alert = Alert(
        id="a1b2c3d4e",
        time="2026-12-07T03:00:00Z",
        updated="2026-12-07T03:00:05Z",
        detector="extraction",
        severity="high",
        subject="spiffe://demo.local/ns/lab/sa/thief",
        state="open",
        summary="PRADA: W=0.81 < <script>",
        evidence={"w": 0.81, "queries": 120},
    )
    store.save(alert, time.time())
    found = page("alerts")
    assert found is not None
    html = found.render(view, {})
    assert "a1b2c3d4e" in html and "spiffe://demo.local/ns/lab/sa/thief" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert found.render(view, {"state": "resolved"}).count("a1b2c3d4e") == 0


def test_rollouts_page_shows_state_checks_and_history(tmp_path: Path) -> None:
    view = _view(tmp_path)
    status = RolloutStatus(
        route="llm/chat",
        service="chat",
        digest="d",
        state="rolledBack",
        step=2,
        weight=0,
        failed=2,
        reason="dlpFindingsPer1k 950 > 0",
        checks=[{"metric": "dlpFindingsPer1k", "value": 950, "limit": "<= 0", "ok": False}],
        started=time.time(),
        history=[{"time": time.time(), "event": "rollback", "step": 2, "weight": 0, "reason": "dlp"}],
    )
    RolloutStore(view.state.path / "rollouts.db").save(status)
    found = page("rollouts")
    assert found is not None
    html = found.render(view, {})
    for text in ("llm/chat", "rolledBack", "dlpFindingsPer1k", "rollback", "950"):
        assert text in html
