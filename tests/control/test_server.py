"""The control plane over real mTLS: who may call what, CSR signing, the config API, the push watch."""

from __future__ import annotations

import json
import socket
import ssl
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from meshward.audit.store import CONTROL_SOURCE
from meshward.control.client import ControlClient, ControlRefused, ControlUnavailable
from meshward.control.server import ControlPlane
from meshward.identity.issuance import IdentityService
from meshward.identity.keys import generate_key, key_pem, make_csr, write_private
from meshward.identity.spiffe import SpiffeId
from meshward.identity.state import MeshState
from tests.support.proc import wait_for

WORKLOADS = textwrap.dedent(
    """\
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: model, namespace: ml, labels: {app: model}}
    spec: {serviceAccount: model-sa, port: 9000}
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: web, namespace: web}
    spec: {port: 9001}
    """
)


def _join(plane: ControlPlane, state: MeshState, short: str, directory: Path) -> ControlClient:
    """A workload's first SVID by token + CSR, then a client that presents it."""
    token = IdentityService(state).create_token(short)
    ns, sa = short.split("/")
    key = generate_key()
    csr = make_csr(key, SpiffeId("demo.local", ns, sa)).decode()
    with ControlClient(plane.url, "demo.local", state.bundle_pem()) as anonymous:
        _, svid = anonymous.request("POST", "/v1/identity/sign", {"csr": csr, "token": token})
    write_private(directory / f"{sa}.pem", key_pem(key) + svid["chain"].encode())
    path = directory / f"{sa}.pem"
    return ControlClient(plane.url, "demo.local", svid["bundle"].encode(), path, path)


def test_token_buys_one_svid_and_is_refused_after(plane: ControlPlane, mesh_state: MeshState) -> None:
    token = IdentityService(mesh_state).create_token("ml/model-sa")
    csr = make_csr(generate_key(), SpiffeId("demo.local", "ml", "model-sa")).decode()
    with ControlClient(plane.url, "demo.local", mesh_state.bundle_pem()) as client:
        status, svid = client.request("POST", "/v1/identity/sign", {"csr": csr, "token": token})
        assert status == 200 and svid["chain"].count("BEGIN CERTIFICATE") == 2
        with pytest.raises(ControlRefused) as refused:
            client.request("POST", "/v1/identity/sign", {"csr": csr, "token": token})
    assert refused.value.status == 403

    # both decisions are in the control plane's own audit chain
    def trail() -> str:
        own = [c for c in plane.audit.store.chains() if c.source == CONTROL_SOURCE]
        return (plane.audit.store.trail_dir / own[0].path_name).read_text() if own else ""

    wait_for(lambda: "refused an SVID" in trail(), 10, what="the refusal in the audit trail")
    assert "issued an SVID for spiffe://demo.local/ns/ml/sa/model-sa" in trail()


def test_each_endpoint_requires_the_right_identity(
    plane: ControlPlane, mesh_state: MeshState, operator: ControlClient, tmp_path: Path
) -> None:
    operator.request("POST", "/v1/config/apply", {"text": WORKLOADS})
    model = _join(plane, mesh_state, "ml/model-sa", tmp_path)
    with ControlClient(plane.url, "demo.local", mesh_state.bundle_pem()) as anonymous:
        with pytest.raises(ControlRefused) as no_cert:
            anonymous.request("GET", "/v1/watch?workload=ml/model&timeout=0")
        assert no_cert.value.status == 401
    with pytest.raises(ControlRefused) as not_operator:
        model.request("GET", "/v1/config/history")
    assert not_operator.value.status == 403
    with pytest.raises(ControlRefused) as other_workload:
        model.request(
            "POST",
            "/v1/sidecars/register",
            {"workload": "web/web", "sidecar": "web/web", "inbound": "127.0.0.1:1"},
        )
    assert other_workload.value.status == 403
    # its own workload (by name, identity from the Workload's serviceAccount) is fine
    model.request(
        "POST",
        "/v1/sidecars/register",
        {"workload": "ml/model", "sidecar": "ml/model", "inbound": "127.0.0.1:7"},
    )
    _, body = model.request("GET", "/v1/watch?workload=ml/model&have=&timeout=1")
    services = {s["service"]: s for s in body["snapshot"]["services"]}
    assert services["model"]["endpoints"] == ["127.0.0.1:7"]
    assert services["model"]["identities"] == ["spiffe://demo.local/ns/ml/sa/model-sa"]
    model.close()


def test_renewal_only_for_the_callers_own_identity(
    plane: ControlPlane, mesh_state: MeshState, operator: ControlClient, tmp_path: Path
) -> None:
    model = _join(plane, mesh_state, "ml/model-sa", tmp_path)
    own = make_csr(generate_key(), SpiffeId("demo.local", "ml", "model-sa")).decode()
    _, svid = model.request("POST", "/v1/identity/renew", {"csr": own})
    assert "BEGIN CERTIFICATE" in svid["chain"]
    other = make_csr(generate_key(), SpiffeId("demo.local", "web", "web")).decode()
    with pytest.raises(ControlRefused, match="may only renew its own identity"):
        model.request("POST", "/v1/identity/renew", {"csr": other})
    model.close()


def test_watch_is_pushed_on_apply(
    plane: ControlPlane, mesh_state: MeshState, operator: ControlClient, tmp_path: Path
) -> None:
    operator.request("POST", "/v1/config/apply", {"text": WORKLOADS})
    web = _join(plane, mesh_state, "web/web", tmp_path)
    _, first = web.request("GET", "/v1/watch?workload=web/web&have=&timeout=1")
    assert first["snapshot"]["generation"] == 1
    got: dict[str, Any] = {}

    def watch() -> None:
        with _join(plane, mesh_state, "web/web", tmp_path / "second") as again:
            _, got["body"] = again.request(
                "GET", f"/v1/watch?workload=web/web&have={first['digest']}&timeout=20", timeout=30
            )
            got["at"] = time.monotonic()

    (tmp_path / "second").mkdir()
    waiter = threading.Thread(target=watch)
    waiter.start()
    time.sleep(0.3)  # let the watch park (the push must not depend on it: digest-based)
    policy = "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: web}\nspec: {}\n"
    applied_at = time.monotonic()
    operator.request("POST", "/v1/config/apply", {"text": policy})
    waiter.join(10)
    assert got["body"]["snapshot"]["generation"] == 2
    assert [r["metadata"]["name"] for r in got["body"]["snapshot"]["resources"]] == ["p"]
    print(f"watch push latency: {(got['at'] - applied_at) * 1000:.1f} ms")
    web.close()


def test_refused_file_reports_location_and_keeps_generation(operator: ControlClient) -> None:
    operator.request("POST", "/v1/config/apply", {"text": WORKLOADS, "filename": "mesh.yaml"})
    broken = textwrap.dedent(
        """\
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: allow-app, namespace: ml}
        spec:
          rules:
          - to:
            - operation:
                methods: [GET, 7]
        """
    )
    with pytest.raises(ControlRefused) as refused:
        operator.request("POST", "/v1/config/apply", {"text": broken, "filename": "policy.yaml"})
    assert refused.value.status == 400
    assert refused.value.body["problems"][0].startswith(
        "policy.yaml:8: AuthorizationPolicy ml/allow-app: spec.rules[0].to[0].operation.methods[1]: "
    )
    _, history = operator.request("GET", "/v1/config/history")
    assert [g["generation"] for g in history["generations"]] == [1]


def test_audit_batches_reach_the_audit_store(
    plane: ControlPlane, mesh_state: MeshState, tmp_path: Path
) -> None:
    web = _join(plane, mesh_state, "web/web", tmp_path)
    with pytest.raises(ControlRefused) as refused:
        web.request("POST", "/v1/audit", raw=b"not a batch", headers={"Content-Type": "application/x-ndjson"})
    assert refused.value.status == 400 and "audit batch" in str(refused.value)
    web.close()


def test_client_refuses_a_server_that_is_not_the_control_plane(mesh_state: MeshState, tmp_path: Path) -> None:
    IdentityService(mesh_state).mint("ml/impostor", tmp_path / "impostor")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "impostor" / "cert.pem", tmp_path / "impostor" / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_one() -> None:
        conn, _ = listener.accept()
        try:
            ctx.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            conn.close()

    server = threading.Thread(target=serve_one, daemon=True)
    server.start()
    with (
        ControlClient(f"https://127.0.0.1:{port}", "demo.local", mesh_state.bundle_pem()) as client,
        pytest.raises(ControlUnavailable, match=r"presented spiffe://demo\.local/ns/ml/sa/impostor"),
    ):
        client.request("GET", "/healthz")
    listener.close()
    server.join(5)


def test_control_json_names_the_running_plane(plane: ControlPlane, mesh_state: MeshState) -> None:
    info = json.loads((mesh_state.path / "control.json").read_text())
    assert info["url"] == plane.url
