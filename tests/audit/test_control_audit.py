"""The control plane's audit facade: its own events chained and signed, sinks from the Mesh resource."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from meshward.audit.control import ControlAudit
from meshward.audit.verify import verify_audit_dir
from meshward.resources.mesh import Mesh
from tests.support.proc import wait_for


def test_control_events_are_chained_verified_and_forwarded(tmp_path: Path) -> None:
    audit = ControlAudit(tmp_path)
    control = "spiffe://demo.local/ns/meshward-system/sa/control"
    out = tmp_path / "siem.jsonl"
    mesh = Mesh.model_validate(
        {
            "apiVersion": "meshward.dev/v1alpha1",
            "kind": "Mesh",
            "metadata": {"name": "mesh"},
            "spec": {"audit": {"sinks": [{"name": "file", "type": "file", "path": str(out)}]}},
        }
    )
    try:
        audit.started(control)
        audit.update_sinks([mesh])
        audit.certificate_issued(
            "spiffe://demo.local/ns/ml/sa/fraud", "1f", dt.datetime(2026, 12, 1, tzinfo=dt.UTC), "join-token"
        )
        audit.certificate_refused("join token expired", src_ip="127.0.0.1")
        audit.config_applied(3, "operator", changes=2)
        audit.config_rolled_back(4, 2, "operator")
        audit.stopped(control)
        wait_for(
            lambda: out.exists() and len(out.read_text().splitlines()) == 6, timeout=10, what="6 forwarded"
        )
    finally:
        audit.close()
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["class_uid"], e["activity_id"], e["status_id"]) for e in events] == [
        (6002, 3, 1),
        (6003, 1, 1),
        (6003, 1, 2),
        (6003, 3, 1),
        (6003, 3, 1),
        (6002, 4, 1),
    ]
    assert events[2]["message"] == "refused an SVID: join token expired"
    assert events[0]["class_name"] == "Application Lifecycle"  # captions added at export
    report = verify_audit_dir(tmp_path / "audit")
    assert report.ok and report.records == 6
