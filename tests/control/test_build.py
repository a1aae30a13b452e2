"""The per-workload snapshot: only what concerns the workload, and the services table."""

from __future__ import annotations

import hashlib
import json
import textwrap

from meshward.config.build import build_snapshot
from meshward.config.encode import GenerationEncoder
from meshward.config.snapshot import MeshSnapshot
from meshward.config.store import SidecarRecord
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
