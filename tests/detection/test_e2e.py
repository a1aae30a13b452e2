"""Detection end to end: a real mesh (control plane, fraud model, its sidecar), real mTLS callers.

One mesh for the module. The callers are this test process presenting SVIDs minted by the mesh
CA straight to the model's inbound sidecar (real mTLS, real filter chain). It checks, on real
traffic: benign inference raises nothing; a synthetic extraction run raises a PRADA alert within
200 queries and quarantines the caller; a burst of denied calls raises a violations alert and the
caller's next allowed calls are refused (a generated DENY policy, visible in ``get`` and
``history``) until ``meshward quarantine release``; certificate-less handshakes raise an auth
alert by address; alerts reach a webhook (JSON and Slack form), a webhook that was down when they
were raised (queued on disk), a syslog receiver (OCSF Detection Finding) and the audit trail.
"""

from __future__ import annotations

import json
import socket
import ssl
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshward.control.detection_access import DetectionAccess
from meshward.control.operations import config_access
from meshward.identity.issuance import IdentityService
from meshward.identity.state import MeshState
from tests.detection.receivers import SyslogReceiver, WebhookReceiver
from tests.detection.traffic import benign_queries, extraction_queries
from tests.mesh.meshctl import Mesh
from tests.support.proc import free_port, wait_for

pytestmark = pytest.mark.e2e

MODEL = "spiffe://demo.local/ns/ml/sa/fraud-model"
PREPROCESSOR = "spiffe://demo.local/ns/ml/sa/preprocessor"
THIEF = "spiffe://demo.local/ns/lab/sa/thief"


def mesh_yaml(syslog: int, webhook: int, late: int) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: meshward.dev/v1alpha1
        kind: Mesh
        metadata: {{name: det}}
        spec:
          trustDomain: demo.local
          audit: {{sinks: [{{name: siem, type: syslog, address: "127.0.0.1:{syslog}"}}]}}
        ---
        apiVersion: meshward.dev/v1alpha1
        kind: Workload
        metadata: {{name: fraud-model-v1, namespace: ml, labels: {{app: fraud-model, version: v1}}}}
        spec:
          service: fraud-model
          serviceAccount: fraud-model
          command: ["python", "-m", "examples.models.fraud", "--port", "{{port}}"]
          readiness: {{httpGet: /v2/health/ready}}
        ---
        apiVersion: meshward.dev/v1alpha1
        kind: AuthorizationPolicy
        metadata: {{name: fraud-infer, namespace: ml}}
        spec:
          selector: {{matchLabels: {{app: fraud-model}}}}
          action: ALLOW
          rules:
          - from: [{{source: {{principals: ["demo.local/ns/ml/sa/preprocessor", "demo.local/ns/lab/sa/thief"]}}}}]
            to: [{{operation: {{models: [fraud], aiOperations: [infer, metadata]}}}}]
        ---
        apiVersion: meshward.dev/v1alpha1
        kind: DetectionPolicy
        metadata: {{name: guard-fraud, namespace: ml}}
        spec:
          selector: {{matchLabels: {{app: fraud-model}}}}
          detectors:
          - {{type: extraction, threshold: 0.90, minQueries: 50}}
          - {{type: violations, maxDenialsPerMinute: 20}}
          - {{type: auth, maxRefusalsPerMinute: 10}}
          response: {{quarantine: {{duration: 10m}}, mode: enforce}}
        ---
        apiVersion: meshward.dev/v1alpha1
        kind: AlertSink
        metadata: {{name: oncall, namespace: ml}}
        spec: {{url: "http://127.0.0.1:{webhook}/json"}}
        ---
        apiVersion: meshward.dev/v1alpha1
        kind: AlertSink
        metadata: {{name: chat, namespace: ml}}
        spec: {{url: "http://127.0.0.1:{webhook}/slack", format: slack, minSeverity: high}}
        ---
        apiVersion: meshward.dev/v1alpha1
        kind: AlertSink
        metadata: {{name: late, namespace: ml}}
        spec: {{url: "http://127.0.0.1:{late}/late"}}
        """
    )


class Caller:
    """A mesh identity calling the model's inbound sidecar directly over mTLS."""

    def __init__(self, state: MeshState, identity: str, directory: Path, inbound: str) -> None:
        svid = IdentityService(state).mint(identity, directory)
        del svid
        ctx = ssl.create_default_context(cafile=str(directory / "bundle.pem"))
        ctx.check_hostname = False  # SVIDs carry a SPIFFE URI, no DNS name (the sidecar checks it)
        ctx.load_cert_chain(directory / "cert.pem", directory / "key.pem")
        self.client = httpx.Client(verify=ctx, timeout=10, trust_env=False)
        self.base = f"https://{inbound}"

    def infer(self, rows: list[list[float]]) -> int:
        tensor = {"name": "input-0", "shape": [len(rows), len(rows[0])], "datatype": "FP32", "data": rows}
        r = self.client.post(
            f"{self.base}/v2/models/fraud/infer",
            json={"inputs": [tensor]},
            headers={"host": "fraud-model.ml"},
        )
        return r.status_code

    def admin(self) -> int:
        r = self.client.post(
            f"{self.base}/v2/repository/models/fraud/unload", headers={"host": "fraud-model.ml"}
        )
        return r.status_code


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("detection")
    syslog, webhook, late = SyslogReceiver(), WebhookReceiver(), free_port()
    (root / "mesh.yaml").write_text(mesh_yaml(syslog.port, webhook.port, late))
    try:
        with Mesh(root / "state").detached(root / "mesh.yaml") as mesh:
            yield {"mesh": mesh, "root": root, "syslog": syslog, "webhook": webhook, "late": late}
    finally:
        webhook.close()
        syslog.close()


def alerts(mesh: Mesh) -> list[dict[str, Any]]:
    """What ``meshward alerts list --json`` prints, through the same access path, in-process."""
    return DetectionAccess(MeshState(mesh.state)).alerts()


def alert_for(mesh: Mesh, detector: str, subject: str) -> dict[str, Any] | None:
    return next((a for a in alerts(mesh) if a["detector"] == detector and a["subject"] == subject), None)


def test_detection_end_to_end(world: dict[str, Any]) -> None:
    mesh: Mesh = world["mesh"]
    state = MeshState(mesh.state)
    inbound = mesh.workload("fraud-model-v1")["inbound"]
    good = Caller(state, "ml/preprocessor", world["root"] / "pre", inbound)
    thief = Caller(state, "lab/thief", world["root"] / "thief", inbound)

    # Benign inference: real rows, 150 queries (30 requests of 5 rows): all answered, no alert.
    rows = benign_queries(150)
    assert {good.infer(rows[i : i + 5]) for i in range(0, 150, 5)} == {200}

    # Extraction: synthetic queries until the thief is quarantined (at most 300 queries).
    queries = extraction_queries(300)
    sent = 0
    for i in range(0, 300, 5):
        status = thief.infer(queries[i : i + 5])
        if status == 403:
            break
        assert status == 200
        sent += 5
    extraction = wait_for(lambda: alert_for(mesh, "extraction", THIEF), 20, 0.2, "an extraction alert")
    assert extraction["evidence"]["queries"] <= 200 and extraction["evidence"]["w"] < 0.90
    assert extraction["policy"] == "ml/guard-fraud" and "quarantine" in extraction["response"]
    assert sent < 300, "the thief was never refused"

    # A burst of denied calls: a violations alert, and the caller's allowed calls are refused.
    assert {good.admin() for _ in range(25)} == {403}
    burst_end = time.monotonic()
    wait_for(lambda: good.infer(rows[:1]) == 403, 20, 0.05, "the quarantine in force")
    took = time.monotonic() - burst_end
    violation = alert_for(mesh, "violations", PREPROCESSOR)
    assert violation is not None and violation["evidence"]["denials_per_minute"] > 20
    assert violation["evidence"]["samples"], "sample request ids"
    print(f"quarantine in force {took:.2f} s after the burst")
    assert took < 10

    # Benign traffic raised no extraction alert for the preprocessor.
    assert alert_for(mesh, "extraction", PREPROCESSOR) is None

    # The quarantine is a generated policy in a new generation, named by its alert.
    name = f"quarantine-{violation['id']}"
    policies = json.loads(mesh.cli("get", "authorizationpolicies", "-o", "json").stdout)
    generated = next(p for p in policies if p["metadata"]["name"] == name)
    assert generated["spec"]["action"] == "DENY"
    assert generated["metadata"]["annotations"]["meshward.dev/alert"] == violation["id"]
    history = json.loads(mesh.cli("history", "--json").stdout)
    assert any(g["applied_by"] == f"detection: alert {violation['id']} (violations)" for g in history)
    listed = json.loads(mesh.cli("quarantine", "list", "--json").stdout)
    mine = next(q for q in listed if q["alert"] == violation["id"])
    assert mine["state"] == "active" and mine["subject"] == PREPROCESSOR

    # Release: the caller is served again.
    mesh.cli("quarantine", "release", mine["id"])
    wait_for(lambda: good.infer(rows[:1]) == 200, 20, 0.05, "the caller served after release")
    left = config_access(state).get("AuthorizationPolicy", None, None)["items"]
    assert not any(p["metadata"]["name"] == name for p in left)

    # Credential stuffing: TLS handshakes without a client certificate, by address.
    host, port = inbound.rsplit(":", 1)
    bare = ssl.create_default_context()
    bare.check_hostname, bare.verify_mode = False, ssl.CERT_NONE
    for _ in range(15):
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            try:
                with bare.wrap_socket(raw) as tls:
                    tls.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass
    auth = wait_for(lambda: alert_for(mesh, "auth", "address:127.0.0.1"), 20, 0.2, "an auth alert")
    assert auth["evidence"]["refused_handshakes"] > 10

    # The CLI's list is the contract: newest first, the fixed fields.
    listed_alerts = json.loads(mesh.cli("alerts", "list", "--json").stdout)
    assert [a["time"] for a in listed_alerts] == sorted((a["time"] for a in listed_alerts), reverse=True)
    for a in listed_alerts:
        assert {"id", "time", "detector", "severity", "subject", "state", "evidence"} <= set(a)
    # The model's sidecar exports its detector state size (PRADA kept the callers' queries).
    admin = mesh.workload("fraud-model-v1")["admin"]
    scrape = httpx.get(f"http://{admin}/stats/prometheus", timeout=10, trust_env=False).text
    line = next(
        ln
        for ln in scrape.splitlines()
        if ln.startswith('meshward_detection_sidecar_state_size{detector="extraction"}')
    )
    assert float(line.split()[-1]) > 0
    # Acknowledge one.
    acked = json.loads(mesh.cli("alerts", "ack", auth["id"], "--json").stdout)
    assert acked["state"] == "acknowledged"

    # Delivery: the webhook (JSON and Slack forms), the syslog SIEM sink, the audit trail.
    webhook: WebhookReceiver = world["webhook"]
    ids = {extraction["id"], violation["id"], auth["id"]}
    wait_for(lambda: ids <= {b["id"] for b in webhook.bodies("/json")}, 20, 0.2, "alerts at the webhook")
    slack = wait_for(lambda: webhook.bodies("/slack"), 20, 0.2, "slack messages")
    assert all(set(m) == {"text"} for m in slack) and any(extraction["id"] in m["text"] for m in slack)
    syslog: SyslogReceiver = world["syslog"]
    wait_for(lambda: all(i in syslog.text() for i in ids), 20, 0.2, "findings at the syslog receiver")
    assert '"class_uid":2004' in syslog.text().replace(" ", "")
    tail = mesh.cli("audit", "tail", "-n", "1000").stdout
    assert tail.count("Detection Finding") >= 3

    # A webhook that was down when the alerts were raised gets every one of them once it is up.
    late = WebhookReceiver(world["late"])
    try:
        wait_for(lambda: ids <= {b["id"] for b in late.bodies("/late")}, 20, 0.2, "queued alerts delivered")
    finally:
        late.close()
