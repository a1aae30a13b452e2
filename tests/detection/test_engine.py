"""The control plane's correlator in-process: throttling, findings, webhooks, quarantine lifecycle.

Real code throughout: a real config store (SQLite in a temporary directory), the real engine,
a real HTTP receiver for webhooks; only the clock is the test's, so expiry is checked exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshward.config.store import ApplyResult, ConfigStore
from meshward.detection.engine import DetectionEngine, DetectionRefused, alerts_for_subject
from meshward.detection.signals import Signal
from meshward.identity.spiffe import SpiffeId
from meshward.resources.loader import load_text
from tests.detection.receivers import WebhookReceiver
from tests.support.proc import free_port, wait_for

THIEF = "spiffe://demo.local/ns/lab/sa/thief"

BASE = """
apiVersion: meshward.dev/v1alpha1
kind: Workload
metadata: {{name: fraud-model-v1, namespace: ml, labels: {{app: fraud-model, version: v1}}}}
spec: {{service: fraud-model, serviceAccount: fraud-model, command: ["true"]}}
---
apiVersion: meshward.dev/v1alpha1
kind: DetectionPolicy
metadata: {{name: guard-fraud, namespace: ml}}
spec:
  selector: {{matchLabels: {{app: fraud-model}}}}
  detectors: [{{type: extraction}}, {{type: violations, maxDenialsPerMinute: 5}}]
  response: {{quarantine: {{duration: 60s}}, mode: {mode}}}
---
apiVersion: meshward.dev/v1alpha1
kind: AlertSink
metadata: {{name: hook, namespace: ml}}
spec: {{url: "http://127.0.0.1:{port}/hook", minSeverity: medium}}
"""


class World:
    def __init__(self, tmp: Path, mode: str = "enforce", port: int | None = None) -> None:
        self.now = 1_800_000_000.0
        self.port = port or free_port()
        self.config = ConfigStore(tmp / "meshward.db", "demo.local")
        self.config.apply(load_text(BASE.format(mode=mode, port=self.port)), "test")
        self.findings: list[dict[str, Any]] = []
        self.generations: list[tuple[int, str]] = []
        self.engine = DetectionEngine(
            tmp,
            self.config,
            "demo.local",
            self.config.resources,
            self.findings.append,
            self._generated,
            clock=lambda: self.now,
        )

    def _generated(self, result: ApplyResult, who: str) -> None:
        self.generations.append((result.generation, who))
        self.engine.config_changed()

    def burst(self, caller: str = THIEF, denials: int = 10) -> dict[str, Any]:
        report = {
            "workload": "ml/fraud-model-v1",
            "callers": {caller: {"requests": denials, "denials": denials}},
        }
        return self.engine.ingest({"reports": [report]}, SpiffeId("demo.local", "ml", "fraud-model"))

    def quarantine_policies(self) -> list[str]:
        return [r.metadata.name for r in self.config.get("AuthorizationPolicy")]


def test_one_alert_per_subject_and_detector_per_interval(tmp_path: Path) -> None:
    w = World(tmp_path)
    first = w.burst()["alerts"]
    assert len(first) == 1
    for _ in range(5):
        w.now += 10
        assert w.burst()["alerts"] == []
    alert = w.engine.store.get(first[0])
    assert alert is not None and alert.count == 6 and alert.state == "open"
    assert [f["class_uid"] for f in w.findings] == [2004]
    finding = w.findings[0]
    assert finding["finding_info"]["uid"] == alert.id and finding["resources"][0]["name"] == THIEF
    assert finding["type_uid"] == 200401 and finding["severity"] == "Medium"
    w.now += 301
    assert len(w.burst()["alerts"]) == 1  # the interval passed: a new alert
    assert [a.subject for a in alerts_for_subject(w.engine.store, THIEF)] == [THIEF, THIEF]
    assert alerts_for_subject(w.engine.store, THIEF, since=w.now - 1)[0].id != alert.id


def test_quarantine_is_a_generation_lifted_on_time(tmp_path: Path) -> None:
    w = World(tmp_path)
    alert_id = w.burst()["alerts"][0]
    assert w.quarantine_policies() == [f"quarantine-{alert_id}"]
    gen, who = w.generations[-1]
    assert who == f"detection: alert {alert_id} (violations)"
    assert w.config.history()[-1].source == "quarantine"
    doc = w.config.get("AuthorizationPolicy")[0].to_doc()
    assert doc["spec"]["action"] == "DENY"
    assert doc["spec"]["rules"][0]["from"][0]["source"]["principals"] == ["demo.local/ns/lab/sa/thief"]
    w.now += 59
    w.engine.tick()
    assert w.quarantine_policies() != []
    w.now += 1.5
    w.engine.tick()
    assert w.quarantine_policies() == []
    assert [q.state for q in w.engine.store.quarantines()] == ["expired"]
    assert w.generations[-1][0] == gen + 1


def test_release_by_id_and_errors(tmp_path: Path) -> None:
    w = World(tmp_path)
    alert_id = w.burst()["alerts"][0]
    qid = w.engine.store.quarantines()[0].id
    released = w.engine.release(qid, "alice")
    assert released["state"] == "released" and "alice" in released["ended_by"]
    assert w.quarantine_policies() == []
    with pytest.raises(DetectionRefused) as exc:
        w.engine.release(qid, "alice")
    assert exc.value.status == 409
    with pytest.raises(DetectionRefused):
        w.engine.release("qnope", "alice")
    assert w.engine.ack(alert_id, "alice")["state"] == "acknowledged"


def test_dry_run_records_what_it_would_do(tmp_path: Path) -> None:
    w = World(tmp_path, mode="dryRun")
    alert = w.engine.store.get(w.burst()["alerts"][0])
    assert alert is not None and alert.response is not None and alert.response.startswith("dry run")
    assert w.quarantine_policies() == [] and w.generations == []
    assert [q.state for q in w.engine.store.quarantines()] == ["dry-run"]


def test_an_address_is_never_quarantined(tmp_path: Path) -> None:
    w = World(tmp_path)
    report = {"workload": "ml/fraud-model-v1", "handshakes": {"10.9.9.9": {"no_cert": 50}}}
    raised = w.engine.ingest({"reports": [report]}, SpiffeId("demo.local", "ml", "fraud-model"))
    alert = w.engine.store.get(raised["alerts"][0])
    assert alert is not None and alert.subject == "address:10.9.9.9" and w.quarantine_policies() == []


def test_a_sidecar_reports_only_for_its_own_workload(tmp_path: Path) -> None:
    w = World(tmp_path)
    report = {"workload": "ml/fraud-model-v1", "callers": {}}
    with pytest.raises(DetectionRefused) as exc:
        w.engine.ingest({"reports": [report]}, SpiffeId("demo.local", "lab", "thief"))
    assert exc.value.status == 403
    with pytest.raises(DetectionRefused):
        w.engine.ingest({"reports": "nope"}, SpiffeId("demo.local", "ml", "fraud-model"))


def test_a_sink_that_is_down_loses_nothing(tmp_path: Path) -> None:
    w = World(tmp_path)
    ids = []
    for caller in ("a", "b", "c"):
        ids += w.burst(f"spiffe://demo.local/ns/x/sa/{caller}")["alerts"]
    w.engine.tick()  # the receiver is not there: delivery fails, nothing is lost
    assert w.engine.store.pending() == 3
    receiver = WebhookReceiver(w.port)
    try:

        def delivered() -> bool:
            w.now += 10  # past any backoff
            w.engine.tick()
            return w.engine.store.pending() == 0

        wait_for(delivered, 20, 0.05, "the outbox drained")
        assert sorted(b["id"] for b in receiver.bodies("/hook")) == sorted(ids)
    finally:
        receiver.close()


def test_low_severity_is_not_sent_to_a_medium_sink(tmp_path: Path) -> None:
    w = World(tmp_path)
    settings = w.engine._workload_settings("ml", "fraud-model-v1")
    w.engine.signal(Signal("volume", THIEF, "low", "new caller", {}), settings, w.now)
    assert w.engine.store.pending() == 0 and len(w.findings) == 1


def test_metrics_name_alerts_and_state(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.burst()
    text = w.engine.metrics_text()
    assert 'meshward_detection_alerts_total{detector="violations",severity="medium"} 1' in text
    assert 'meshward_detection_state_size{detector="violations"}' in text
    assert "meshward_detection_quarantines_active 1" in text
