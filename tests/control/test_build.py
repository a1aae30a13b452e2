"""The per-workload snapshot: only what concerns the workload, and the services table."""

from __future__ import annotations

import hashlib
import json
import textwrap

import pytest

from meshward.config.build import build_snapshot
from meshward.config.encode import GenerationEncoder
from meshward.config.endpoint import parse_endpoint
from meshward.config.snapshot import MeshSnapshot, SnapshotDecoder
from meshward.config.store import SidecarRecord
from meshward.proxy.routes import RouteTable
from meshward.resources.loader import load_text

MESH = textwrap.dedent(
    """\
    apiVersion: meshward.dev/v1alpha1
    kind: Mesh
    metadata: {name: mesh, namespace: meshward-system}
    spec: {trustDomain: demo.local, rootNamespace: meshward-system}
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: fraud-v1, namespace: ml, labels: {app: fraud}}
    spec: {service: fraud, serviceAccount: fraud-sa}
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: web, namespace: front}
    spec: {}
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: AuthorizationPolicy
    metadata: {name: ml-policy, namespace: ml}
    spec: {}
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: AuthorizationPolicy
    metadata: {name: front-policy, namespace: front}
    spec: {}
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: AuthorizationPolicy
    metadata: {name: global, namespace: meshward-system}
    spec: {}
    """
)

SIDECARS = [
    SidecarRecord("s1", "ml", "fraud-v1", "spiffe://demo.local/ns/ml/sa/fraud-sa", "127.0.0.1:2001"),
    SidecarRecord("s2", "ml", "fraud-v1", "spiffe://demo.local/ns/ml/sa/fraud-sa", "127.0.0.1:2002"),
    SidecarRecord("s3", "front", "web", "spiffe://demo.local/ns/front/sa/web", "127.0.0.1:3001"),
]


def test_snapshot_holds_own_namespace_and_root_policies_only() -> None:
    snap = build_snapshot(7, load_text(MESH), SIDECARS, "demo.local", "ml", "fraud-v1")
    assert snap.generation == 7
    assert sorted(r.metadata.name for r in snap.resources) == ["global", "ml-policy"]
    assert snap.workload.service == "fraud" and snap.workload.service_account == "fraud-sa"
    assert snap.workload.labels == {"app": "fraud"}
    fraud = snap.services["fraud.ml"]
    assert fraud.endpoints == ("127.0.0.1:2001", "127.0.0.1:2002")
    assert fraud.identities == ("spiffe://demo.local/ns/ml/sa/fraud-sa",)
    assert snap.services["web.front"].endpoints == ("127.0.0.1:3001",)


def test_identity_without_workload_gets_ad_hoc_workload() -> None:
    snap = build_snapshot(1, load_text(MESH), [], "demo.local", "front", "job")
    assert (snap.workload.name, snap.workload.service_account, snap.workload.labels) == ("job", "job", {})
    assert [r.metadata.name for r in snap.resources] == ["front-policy", "global"]
    assert snap.services["web.front"].endpoints == ()


def test_snapshot_round_trips_through_json() -> None:
    snap = build_snapshot(3, load_text(MESH), SIDECARS, "demo.local", "ml", "fraud-v1")
    again = MeshSnapshot.from_json(snap.to_json())
    assert again.to_json() == snap.to_json()


def test_encoder_text_is_exactly_the_snapshots_json() -> None:
    resources = load_text(MESH)
    encoder = GenerationEncoder(5, resources, SIDECARS, "demo.local")
    # several workloads of one namespace (shared parts reused), another namespace, an ad hoc one
    for ns, name in [
        ("ml", "fraud-v1"),
        ("ml", "other"),
        ("front", "web"),
        ("ml", "fraud-v1"),
        ("lab", "job"),
    ]:
        digest, text = encoder.encode(ns, name)
        expected = json.dumps(
            build_snapshot(5, resources, SIDECARS, "demo.local", ns, name).to_json(), sort_keys=True
        )
        assert text == expected
        assert digest == hashlib.sha256(expected.encode()).hexdigest()
    assert encoder.encode("ml", "fraud-v1")[0] != encoder.encode("ml", "other")[0]


def test_decoder_reuses_unchanged_resources_and_validates_changed_ones() -> None:
    decoder = SnapshotDecoder()
    first_doc = build_snapshot(1, load_text(MESH), SIDECARS, "demo.local", "ml", "fraud-v1").to_json()
    first = decoder.decode(first_doc)
    changed = load_text(
        MESH.replace(
            "name: ml-policy, namespace: ml}\nspec: {}",
            "name: ml-policy, namespace: ml}\nspec: {action: DENY}",
        )
    )
    second = decoder.decode(build_snapshot(2, changed, SIDECARS, "demo.local", "ml", "fraud-v1").to_json())
    by_name = {r.metadata.name: r for r in first.resources}
    again = {r.metadata.name: r for r in second.resources}
    assert again["global"] is by_name["global"]  # unchanged: the same frozen model
    assert again["ml-policy"] is not by_name["ml-policy"]
    assert again["ml-policy"].to_doc() != by_name["ml-policy"].to_doc()
    assert second.mesh is first.mesh
    # each decode equals a fresh decode of the same document
    assert second.to_json() == MeshSnapshot.from_json(second.to_json()).to_json()


def test_decoder_keeps_its_memory_when_a_snapshot_is_malformed() -> None:
    decoder = SnapshotDecoder()
    doc = build_snapshot(1, load_text(MESH), SIDECARS, "demo.local", "ml", "fraud-v1").to_json()
    first = decoder.decode(doc)
    bad = json.loads(json.dumps(doc))
    bad["resources"].append({"kind": "NoSuchKind"})
    with pytest.raises(ValueError, match="unknown kind"):
        decoder.decode(bad)
    again = decoder.decode(json.loads(json.dumps(doc)))
    assert [id(r) for r in again.resources] == [id(r) for r in first.resources]


@pytest.mark.parametrize("text", ["127.0.0.1:0", "224.0.0.1:80", "0.0.0.0:80", "host", "[::1]:x", "::1:80"])
def test_parse_endpoint_refuses_a_bad_endpoint_every_time(text: str) -> None:
    for _ in range(2):  # a refusal leaves nothing behind: asked again, it refuses again
        with pytest.raises(ValueError):
            parse_endpoint(text)
    assert parse_endpoint("127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert parse_endpoint("[::1]:8443") == ("::1", 8443)


def test_route_tables_share_the_targets_of_an_unchanged_entry() -> None:
    decoder = SnapshotDecoder()
    resources = load_text(MESH)
    first = decoder.decode(build_snapshot(1, resources, SIDECARS, "demo.local", "ml", "fraud-v1").to_json())
    moved = [*SIDECARS[:2], SidecarRecord("s3", "front", "web", SIDECARS[2].identity, "127.0.0.1:3002")]
    second = decoder.decode(build_snapshot(2, resources, moved, "demo.local", "ml", "fraud-v1").to_json())
    assert second.services["fraud.ml"] is first.services["fraud.ml"]
    assert second.services["web.front"] is not first.services["web.front"]
    a, b = RouteTable(first), RouteTable(second)
    fraud_a, fraud_b = a.resolve("fraud.ml"), b.resolve("fraud.ml")
    assert fraud_a is not None and fraud_b is not None and fraud_b.targets is fraud_a.targets
    assert fraud_b.plan is not fraud_a.plan and fraud_b.plan.generation == 2  # plans are per generation
    web = b.resolve("web.front")
    assert web is not None and [str(t) for t in web.targets] == ["127.0.0.1:3002"]
