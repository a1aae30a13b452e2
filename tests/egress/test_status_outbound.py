"""``meshward status`` says which outbound traffic policy is in force, loudly for ALLOW_ANY."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshward.cli.main import main

ALLOW_ANY = """\
apiVersion: meshward.dev/v1alpha1
kind: Mesh
metadata: {name: mesh, namespace: meshward-system}
spec: {trustDomain: demo.local, outboundTrafficPolicy: {mode: ALLOW_ANY}}
"""


def test_allow_any_is_loud_in_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = str(tmp_path / "state")
    assert main(["init", "--state", state, "--trust-domain", "demo.local"]) == 0
    capsys.readouterr()
    assert main(["status", "--state", state, "--json"]) == 3  # nothing runs: exit 3
    doc = json.loads(capsys.readouterr().out)
    assert doc["outbound_traffic_policy"] == "REGISTRY_ONLY"
    assert not any("ALLOW_ANY" in w for w in doc["warnings"])
    (tmp_path / "mesh.yaml").write_text(ALLOW_ANY)
    assert main(["apply", "--state", state, "-f", str(tmp_path / "mesh.yaml")]) == 0
    capsys.readouterr()
    assert main(["status", "--state", state, "--json"]) == 3  # nothing runs: exit 3
    doc = json.loads(capsys.readouterr().out)
    assert doc["outbound_traffic_policy"] == "ALLOW_ANY"
    assert any("ALLOW_ANY" in w for w in doc["warnings"])
    assert main(["status", "--state", state]) == 3
    text = capsys.readouterr().out
    assert any(line.startswith("warning: outboundTrafficPolicy is ALLOW_ANY") for line in text.splitlines())
