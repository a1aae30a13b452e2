"""Pages rendered from a mesh's state alone (no process running): unprotected workloads stand
out in the graph, the config diff names the change, alerts and rollouts say "not available"."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from meshward.cli.main import main
from meshward.dashboard.pages import graph, page
from meshward.dashboard.view import MeshView

MESH = textwrap.dedent(
    """\
    apiVersion: meshward.dev/v1alpha1
    kind: Mesh
    metadata: {name: m}
    spec: {trustDomain: offline.local, defaultPolicy: allow, mtls: {mode: MODE}}
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: open-model, namespace: ml, labels: {app: open-model}}
    spec: {command: ["true"]}
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: guarded-model, namespace: ml, labels: {app: guarded-model, version: v2}}
    spec: {command: ["true"]}
    ---
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {name: guard, namespace: ml}
    spec:
      selector: {matchLabels: {app: guarded-model}}
      action: ALLOW
      rules: [{from: [{source: {principals: ["offline.local/ns/web/sa/webapp"]}}]}]
    """
)


def _mesh(tmp_path: Path, mode: str) -> MeshView:
    state = tmp_path / "state"
    assert main(["init", "--state", str(state), "--trust-domain", "offline.local"]) == 0
    (tmp_path / "mesh.yaml").write_text(MESH.replace("MODE", mode))
    assert main(["apply", "--state", str(state), "-f", str(tmp_path / "mesh.yaml")]) == 0
    return MeshView(state)


@pytest.mark.parametrize(
    ("mode", "unprotected"),
    [("STRICT", {"ml/open-model"}), ("PERMISSIVE", {"ml/open-model", "ml/guarded-model"})],
)
def test_unprotected_workloads_stand_out(tmp_path: Path, mode: str, unprotected: set[str]) -> None:
    view = _mesh(tmp_path, mode)
    model = graph.build_graph(view, 300.0)
    assert set(model.nodes) == {"ml/open-model", "ml/guarded-model"} and not model.edges
    assert model.unprotected == unprotected
    html = graph.render(view, {})
    for ref in model.nodes:
        marked = 'class="node unprotected' in html.split(f'data-node="{ref}"')[0].rsplit("<g ", 1)[-1]
        assert marked == (ref in unprotected), ref
    assert "v2" in html


def test_config_diff_and_feature_pages(tmp_path: Path) -> None:
    view = _mesh(tmp_path, "STRICT")
    config = page("config")
    assert config is not None
    html = config.render(view, {"from": "0", "to": "1"})
    assert "+kind: AuthorizationPolicy" in html and "generation 1" in html
    assert "No generation 7" in config.render(view, {"from": "7", "to": "1"})
    alerts = page("alerts")
    assert alerts is not None
    assert "No alerts yet" in alerts.render(view, {})  # no control plane has raised any
    rollouts = page("rollouts")
    assert rollouts is not None
    assert "No rollouts" in rollouts.render(view, {})


def test_layers_put_callers_left_of_callees() -> None:
    layer = graph.layers(["a", "b", "c", "d"], [("a", "b"), ("b", "c"), ("c", "b"), ("d", "d")])
    assert layer["a"] == 0 and layer["b"] >= 1 and layer["d"] == 0
    assert max(layer.values()) <= 4  # a cycle stops growing
