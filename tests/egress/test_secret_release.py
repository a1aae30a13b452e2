"""The control plane releases a credential only to sidecars of workloads allowed to use it."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshward.control.client import ControlClient, ControlRefused
from meshward.control.server import ControlPlane
from meshward.egress.secrets import SecretStore
from meshward.identity.state import MeshState
from tests.control.conftest import mesh_state, operator, plane
from tests.control.test_server import _join
from tests.egress.config import LLM_CONFIG
from tests.support.proc import wait_for

__all__ = ["mesh_state", "operator", "plane"]  # the control plane fixtures, used here too

VALUE = "sk-provider-value-3c9d1e"
CONFIG = LLM_CONFIG


def test_release_follows_egress_policy_and_refusals_are_audited(
    plane: ControlPlane, mesh_state: MeshState, operator: ControlClient, tmp_path: Path
) -> None:
    operator.request("POST", "/v1/config/apply", {"text": CONFIG})
    SecretStore(mesh_state.path).set("llm-key", VALUE)
    summarizer = _join(plane, mesh_state, "llm/summarizer-sa", tmp_path)
    other = _join(plane, mesh_state, "llm/other", tmp_path)
    with summarizer, other:
        _, doc = summarizer.request("GET", "/v1/secrets/value?workload=llm/summarizer&name=llm-key")
        assert doc == {"name": "llm-key", "value": VALUE, "via": "api.llm.example:443"}
        refusals = [
            (other, "llm/other", "llm-key", 403),  # no EgressPolicy lets it reach the service
            (other, "llm/summarizer", "llm-key", 403),  # may not act for another workload
            (summarizer, "llm/summarizer", "other-key", 403),  # no service of its uses that secret
        ]
        for client, workload, name, status in refusals:
            with pytest.raises(ControlRefused) as refused:
                client.request("GET", f"/v1/secrets/value?workload={workload}&name={name}")
            assert refused.value.status == status and VALUE not in str(refused.value.body)
    audit_dir = mesh_state.path / "audit"

    def recorded() -> bool:
        texts = [p.read_bytes() for p in audit_dir.rglob("*") if p.is_file()]
        return any(b"ReleaseSecret" in t for t in texts)

    wait_for(recorded, 10, what="the refused fetch in the control plane's audit trail")
    assert not any(VALUE.encode() in p.read_bytes() for p in audit_dir.rglob("*") if p.is_file())
