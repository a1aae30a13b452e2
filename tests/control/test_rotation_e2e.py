"""A running control plane follows ``meshward ca rotate --root`` without a restart.

A real control plane (HTTPS, mTLS) serves two sidecar agents feeding real in-process Sidecars.
After the rotation (the real CLI, in its own process): a sidecar joining with a token gets a
new-root SVID and talks to the control plane with it; the control plane serves a certificate
from the new intermediate; the old-root sidecar is pushed the new bundle, renews under the new
root and keeps talking; and the two sidecars' own mTLS contexts accept each other both ways.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from meshward.control.client import ControlClient
from meshward.control.server import ControlPlane
from meshward.identity.issuance import IdentityService
from meshward.identity.spiffe import SpiffeId
from meshward.identity.state import MeshState
from meshward.proxy.controlclient import AgentConfig, ControlAgent
from meshward.proxy.options import SidecarOptions
from meshward.proxy.sidecar import Sidecar
from meshward.tls.peer import peer_spiffe_id
from tests.support.loop import LoopThread
from tests.support.proc import wait_for

pytestmark = pytest.mark.e2e

Join = Callable[[str, str, bool], tuple[ControlAgent, Sidecar]]

WORKLOADS = textwrap.dedent(
    """\
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: model, namespace: ml, labels: {app: model}}
    spec: {port: 9000}
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: client, namespace: web, labels: {app: client}}
    spec: {port: 9001}
    """
)


def _root(state: MeshState) -> x509.Certificate:
    return x509.load_pem_x509_certificate(state.root_cert_path.read_bytes())


def _chains_to(chain_pem: bytes, root: x509.Certificate) -> bool:
    """The chain's intermediate is signed by ``root`` (and the leaf by the intermediate)."""
    leaf, intermediate = x509.load_pem_x509_certificates(chain_pem)[:2]
    try:
        leaf.verify_directly_issued_by(intermediate)
        intermediate.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _ca_rotate_root(state: MeshState) -> None:
    subprocess.run(
        [sys.executable, "-m", "meshward", "ca", "rotate", "--root", "--state", str(state.path)],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def agents(
    plane: ControlPlane, mesh_state: MeshState, operator: ControlClient, tmp_path: Path, loop: LoopThread
) -> Iterator[Join]:
    """Starts a sidecar agent (first SVID with a token, or its cached one; first snapshot; watch)
    as a sidecar process launched now would; stops them all after."""
    operator.request("POST", "/v1/config/apply", {"text": WORKLOADS})
    started: list[ControlAgent] = []

    def join(ns: str, name: str, with_token: bool = True) -> tuple[ControlAgent, Sidecar]:
        sidecar = Sidecar(SidecarOptions(state_dir=tmp_path / name))
        config = AgentConfig(
            control_url=plane.url,
            identity=SpiffeId("demo.local", ns, name),
            workload=f"{ns}/{name}",
            sidecar_id=f"{ns}/{name}",
            directory=tmp_path / name,
            bootstrap_bundle_pem=mesh_state.bundle_pem(),  # as a sidecar launched now reads it
            token=IdentityService(mesh_state).create_token(f"{ns}/{name}") if with_token else None,
        )
        agent = ControlAgent(config, sidecar)
        loop.run(agent.obtain_identity())
        loop.run(agent.initial_snapshot())  # a watch: the control plane accepted this SVID over mTLS
        loop.call(agent.start, None)
        started.append(agent)
        return agent, sidecar

    yield join
    for agent in started:
        loop.run(agent.stop())


def _mtls_exchange(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext) -> tuple[str, str]:
    """One real mTLS connection over loopback; the SPIFFE IDs each side verified."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    seen: dict[str, str] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            peer = peer_spiffe_id(tls)
            seen["server saw"] = peer.uri if peer else ""
            tls.sendall(tls.recv(5))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=10) as raw,
            client_ctx.wrap_socket(raw) as tls,
        ):
            peer = peer_spiffe_id(tls)
            tls.sendall(b"hello")
            assert tls.recv(5) == b"hello"
        thread.join(10)
    finally:
        listener.close()
    return seen.get("server saw", ""), peer.uri if peer else ""


def test_rotate_root_new_sidecar_joins_old_one_follows(
    plane: ControlPlane, mesh_state: MeshState, agents: Join, loop: LoopThread
) -> None:
    join = agents
    old_agent, old_sidecar = join("ml", "model", True)
    old_root = _root(mesh_state)
    assert old_agent.svid is not None and _chains_to(old_agent.svid.chain_pem, old_root)

    _ca_rotate_root(mesh_state)
    new_root = _root(mesh_state)
    assert new_root != old_root

    # a sidecar joining now gets a new-root SVID, and the control plane accepts it over mTLS
    new_agent, new_sidecar = join("web", "client", True)
    assert new_agent.svid is not None and _chains_to(new_agent.svid.chain_pem, new_root)
    assert loop.run(new_agent.register())

    # the control plane's own certificate was re-issued from the new intermediate: a client that
    # trusts only the new root verifies it
    only_new = ssl.create_default_context(cadata=new_root.public_bytes(Encoding.PEM).decode())
    only_new.check_hostname = False
    host, port = plane.url.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw, only_new.wrap_socket(raw) as tls:
        served = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
        assert (
            served.issuer
            == x509.load_pem_x509_certificates(mesh_state.intermediate_cert_path.read_bytes())[0].subject
        )

    # the old-root sidecar is pushed the new bundle and renews under the new root, without a restart
    wait_for(
        lambda: old_agent.svid is not None and _chains_to(old_agent.svid.chain_pem, new_root),
        20,
        what="the old sidecar's SVID renewed under the new root",
    )
    assert old_agent.svid is not None and len(x509.load_pem_x509_certificates(old_agent.svid.bundle_pem)) == 2
    assert loop.run(old_agent.register())  # and it keeps talking to the control plane

    # the two sidecars' data-plane contexts accept each other, both ways
    model, client = "spiffe://demo.local/ns/ml/sa/model", "spiffe://demo.local/ns/web/sa/client"
    assert _mtls_exchange(new_sidecar.identity.client_context, old_sidecar.identity.server_context) == (
        client,
        model,
    )
    assert _mtls_exchange(old_sidecar.identity.client_context, new_sidecar.identity.server_context) == (
        model,
        client,
    )


def test_a_sidecar_away_during_the_rotation_catches_up_when_restarted(
    mesh_state: MeshState, agents: Join, loop: LoopThread
) -> None:
    """Its cached SVID and bundle are old-root only; the bundle it is restarted with verifies the
    control plane's new certificate, and the watch brings it the rest."""
    away, _ = agents("ml", "model", True)
    loop.run(away.stop())
    _ca_rotate_root(mesh_state)
    new_root = _root(mesh_state)
    restarted, sidecar = agents("ml", "model", False)  # no token: the cached, old-root SVID
    wait_for(
        lambda: restarted.svid is not None and _chains_to(restarted.svid.chain_pem, new_root),
        20,
        what="the restarted sidecar's SVID renewed under the new root",
    )
    assert loop.run(restarted.register())
    # the agent installs the SVID in the sidecar right after it holds it (under its lock): wait
    wait_for(
        lambda: (
            restarted.svid is not None
            and sidecar.identity.info.serial
            == x509.load_pem_x509_certificates(restarted.svid.chain_pem)[0].serial_number
        ),
        10,
        what="the sidecar to serve the renewed SVID",
    )


def test_a_root_whose_overlap_ended_is_no_longer_trusted(
    plane: ControlPlane, mesh_state: MeshState, tmp_path: Path
) -> None:
    """The server context is rebuilt, not added to: an old-root client is refused after the overlap."""
    IdentityService(mesh_state).mint("ml/model", tmp_path / "old", None)
    host, port = plane.url.removeprefix("https://").rsplit(":", 1)

    def healthz(svid_dir: Path) -> bytes:
        """The first bytes of the answer, or the TLS error when the client certificate is refused."""
        ctx = ssl.create_default_context(cafile=str(mesh_state.bundle_path))
        ctx.check_hostname = False
        ctx.load_cert_chain(svid_dir / "cert.pem", svid_dir / "key.pem")
        try:
            with socket.create_connection((host, int(port)), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: control\r\nConnection: close\r\n\r\n")
                return tls.recv(12)  # TLS 1.3: a refused client certificate surfaces on this read
        except (ssl.SSLError, ConnectionError) as exc:
            return f"refused: {exc}".encode()

    assert healthz(tmp_path / "old") == b"HTTP/1.1 200"
    command = [sys.executable, "-m", "meshward", "ca", "rotate", "--root", "--overlap", "0s"]
    subprocess.run([*command, "--state", str(mesh_state.path)], check=True, capture_output=True, timeout=60)
    IdentityService(mesh_state).mint("ml/model", tmp_path / "new", None)
    assert healthz(tmp_path / "new") == b"HTTP/1.1 200"
    assert healthz(tmp_path / "old").startswith(b"refused: ")
