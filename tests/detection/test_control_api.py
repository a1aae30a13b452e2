"""The control plane's detection API over real mTLS: refused CSRs raise an auth alert; only a
workload reports for itself; the operator reads alerts and metrics."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from meshward.control.client import ControlClient, ControlRefused
from meshward.control.server import ControlPlane
from meshward.identity.keys import generate_key, make_csr
from meshward.identity.spiffe import SpiffeId
from meshward.identity.state import MeshState
from tests.control.conftest import mesh_state, operator, plane
from tests.control.test_server import _join

__all__ = ["mesh_state", "operator", "plane"]


def test_refused_join_tokens_raise_an_auth_alert(
    plane: ControlPlane, mesh_state: MeshState, operator: ControlClient
) -> None:
    csr = make_csr(generate_key(), SpiffeId("demo.local", "ml", "model")).decode()
    with ControlClient(plane.url, "demo.local", mesh_state.bundle_pem()) as anonymous:
        for _ in range(6):
            with pytest.raises(ControlRefused):
                anonymous.request("POST", "/v1/identity/sign", {"csr": csr, "token": "guessed-token"})
    _, body = operator.request("GET", "/v1/alerts")
    [alert] = body["alerts"]
    assert alert["detector"] == "auth" and alert["subject"] == "address:127.0.0.1"
    assert alert["evidence"]["kind"] == "csr_refused" and alert["count"] >= 1
    _, shown = operator.request("GET", f"/v1/alerts/show?id={alert['id']}")
    assert shown["id"] == alert["id"]
    _, metrics = operator.request("GET", "/v1/detection/metrics")
    assert 'meshward_detection_alerts_total{detector="auth",severity="high"} 1' in metrics["text"]


def test_a_sidecar_reports_only_for_its_workload(
    plane: ControlPlane, mesh_state: MeshState, operator: ControlClient, tmp_path: Path
) -> None:
    operator.request(
        "POST",
        "/v1/config/apply",
        {
            "text": textwrap.dedent(
                """\
                apiVersion: meshward.dev/v1alpha1
                kind: Workload
                metadata: {name: model, namespace: ml, labels: {app: model}}
                spec: {serviceAccount: model-sa, port: 9000}
                """
            )
        },
    )
    with _join(plane, mesh_state, "ml/model-sa", tmp_path) as model:
        report = {"workload": "ml/model", "callers": {"spiffe://demo.local/ns/a/sa/b": {"requests": 1}}}
        status, body = model.request("POST", "/v1/detection/report", {"reports": [report]})
        assert status == 200 and body == {"accepted": 1, "alerts": []}
        with pytest.raises(ControlRefused) as exc:
            model.request("POST", "/v1/detection/report", {"reports": [dict(report, workload="web/web")]})
        assert exc.value.status == 403
        with pytest.raises(ControlRefused) as exc:  # the alerts are the operator's
            model.request("GET", "/v1/alerts")
        assert exc.value.status == 403
