"""The config store: generations, what changed, history, rollback, ACK/NACK (real SQLite file)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from meshward.config.store import ApplyRefused, ConfigStore, SidecarRecord
from meshward.resources.loader import load_text


def _docs(port: int = 8080, extra: str = "") -> str:
    return (
        textwrap.dedent(
            f"""\
        apiVersion: meshward.dev/v1alpha1
        kind: Workload
        metadata: {{name: a, namespace: ml}}
        spec: {{port: {port}}}
        ---
        apiVersion: meshward.dev/v1alpha1
        kind: Workload
        metadata: {{name: b, namespace: ml}}
        spec: {{port: 9090}}
        """
        )
        + extra
    )


@pytest.fixture
def store(tmp_path: Path) -> ConfigStore:
    return ConfigStore(tmp_path / "meshward.db", trust_domain="demo.local")


def test_apply_creates_generation_then_reports_changes(store: ConfigStore) -> None:
    assert store.generation() == 0
    first = store.apply(load_text(_docs()), "alice")
    assert (first.generation, first.changed) == (1, True)
    assert [str(c) for c in first.changes] == ["workload ml/a created", "workload ml/b created"]

    second = store.apply(load_text(_docs(port=8081)), "bob")
    assert second.generation == 2
    assert [c.action for c in second.changes] == ["configured", "unchanged"]
    assert "-  port: 8080" in second.changes[0].diff and "+  port: 8081" in second.changes[0].diff

    same = store.apply(load_text(_docs(port=8081)), "bob")
    assert (same.generation, same.changed) == (2, False)
    assert store.generation() == 2

    history = store.history()
    assert [(h.generation, h.applied_by, h.source) for h in history] == [
        (1, "alice", "apply"),
        (2, "bob", "apply"),
    ]
    assert history[1].summary == {"configured": 1, "unchanged": 1}


def test_apply_merges_and_rollback_restores_exact_set(store: ConfigStore) -> None:
    store.apply(load_text(_docs()), "alice")
    policy = textwrap.dedent(
        """\
        apiVersion: meshward.dev/v1alpha1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: ml}
        spec: {}
        """
    )
    store.apply(load_text(policy), "alice")
    assert [r.ref for r in store.resources()] == [
        "AuthorizationPolicy ml/p",
        "Workload ml/a",
        "Workload ml/b",
    ]
    back = store.rollback(1, "carol")
    assert back.generation == 3
    assert [str(c) for c in back.changes if c.action != "unchanged"] == ["authorizationpolicy ml/p deleted"]
    assert [r.ref for r in store.resources()] == ["Workload ml/a", "Workload ml/b"]
    assert store.history()[-1].source == "rollback to 1"
    with pytest.raises(KeyError):
        store.rollback(42, "carol")


def test_dry_run_plan_writes_nothing(store: ConfigStore) -> None:
    store.apply(load_text(_docs()), "alice")
    plan = store.plan(load_text(_docs(port=1)))
    assert [c.action for c in plan] == ["configured", "unchanged"]
    assert store.generation() == 1


def test_get_by_kind_plural_and_name(store: ConfigStore) -> None:
    store.apply(load_text(_docs()), "alice")
    assert [r.metadata.name for r in store.get("workloads")] == ["a", "b"]
    assert [r.metadata.name for r in store.get("Workload", "b")] == ["b"]
    assert store.get("workload", "zzz") == []
    with pytest.raises(KeyError, match="unknown kind"):
        store.get("gateways")


def test_mesh_with_other_trust_domain_is_refused(store: ConfigStore) -> None:
    mesh = (
        "apiVersion: meshward.dev/v1alpha1\nkind: Mesh\nmetadata: {name: m}\nspec: {trustDomain: other.td}\n"
    )
    with pytest.raises(ApplyRefused, match="differs"):
        store.apply(load_text(mesh), "alice")
    assert store.generation() == 0


def test_a_second_mesh_resource_is_refused(store: ConfigStore) -> None:
    def mesh(name: str, mode: str) -> str:
        return (
            f"apiVersion: meshward.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: {name}}}\n"
            f"spec: {{trustDomain: demo.local, mtls: {{mode: {mode}}}}}\n"
        )

    assert store.apply(load_text(mesh("quickstart", "STRICT")), "alice").generation == 1
    for other in (mesh("demo", "PERMISSIVE"), mesh("zzz", "PERMISSIVE")):
        with pytest.raises(ApplyRefused, match="already has a Mesh resource, 'quickstart'"):
            store.plan(load_text(other))
        with pytest.raises(ApplyRefused, match="already has a Mesh resource, 'quickstart'"):
            store.apply(load_text(other), "bob")
    assert store.generation() == 1
    assert [r.metadata.name for r in store.get("Mesh")] == ["quickstart"]
    # the existing Mesh itself may change
    changed = store.apply(load_text(mesh("quickstart", "PERMISSIVE")), "bob")
    assert (changed.generation, [c.action for c in changed.changes]) == (2, ["configured"])


def test_sidecars_and_acks_survive_reopen(store: ConfigStore, tmp_path: Path) -> None:
    store.register_sidecar(
        SidecarRecord("ml/a#1", "ml", "a", "spiffe://demo.local/ns/ml/sa/a", "127.0.0.1:1")
    )
    store.record_ack("ml/a#1", 3, ok=False, reason="bad regex")
    reopened = ConfigStore(tmp_path / "meshward.db")
    assert [s.inbound for s in reopened.sidecars()] == ["127.0.0.1:1"]
    ack = reopened.acks()["ml/a#1"]
    assert (ack.generation, ack.status, ack.reason) == (3, "NACK", "bad regex")


def test_an_empty_file_is_not_an_apply(store: ConfigStore) -> None:
    from meshward.control.operations import ConfigError, apply_text

    with pytest.raises(ConfigError, match="no resources in the file"):
        apply_text(store, "# nothing here\n---\n", "empty.yaml", dry_run=False, who="alice")
    assert store.generation() == 0


def test_reading_a_generation_validates_only_the_documents_that_changed(store: ConfigStore) -> None:
    store.apply(load_text(_docs()), "alice")
    first = {r.metadata.name: r for r in store.resources()}
    store.apply(load_text(_docs(port=8081)), "alice")
    second = {r.metadata.name: r for r in store.resources()}
    assert second["b"] is first["b"]  # unchanged: the same frozen model
    assert second["a"] is not first["a"] and second["a"].spec.port == 8081
    # an older generation still reads as it was
    assert {r.metadata.name: r.spec.port for r in store.resources(1)} == {"a": 8080, "b": 9090}
