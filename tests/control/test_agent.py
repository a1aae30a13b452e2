"""The sidecar's control agent against a real control plane, feeding a real (in-process) Sidecar."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from meshward.control.client import ControlClient
from meshward.control.server import ControlPlane
from meshward.identity.issuance import IdentityService
from meshward.identity.keys import write_private, write_public
from meshward.identity.spiffe import SpiffeId
from meshward.identity.state import MeshState
from meshward.proxy.controlclient import AgentConfig, ControlAgent, IdentityError
from meshward.proxy.options import SidecarOptions
from meshward.proxy.sidecar import Sidecar
from tests.support.loop import LoopThread
from tests.support.proc import wait_for


def _workload(labels: str) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: meshward.dev/v1alpha1
        kind: Workload
        metadata: {{name: model, namespace: ml, labels: {labels}}}
        spec: {{port: 9000}}
        """
    )


def _agent(
    plane_url: str, state: MeshState, directory: Path, token: str | None
) -> tuple[ControlAgent, Sidecar]:
    sidecar = Sidecar(SidecarOptions(state_dir=directory))
    config = AgentConfig(
        control_url=plane_url,
        identity=SpiffeId("demo.local", "ml", "model"),
        workload="ml/model",
        sidecar_id="ml/model",
        directory=directory,
        bootstrap_bundle_pem=state.bundle_pem(),
        token=token,
    )
    return ControlAgent(config, sidecar), sidecar


def test_join_watch_ack_nack_then_serve_from_cache(
    plane: ControlPlane, mesh_state: MeshState, operator: ControlClient, tmp_path: Path, loop: LoopThread
) -> None:
    operator.request("POST", "/v1/config/apply", {"text": _workload("{app: model}")})
    token = IdentityService(mesh_state).create_token("ml/model")
    agent, sidecar = _agent(plane.url, mesh_state, tmp_path / "sc", token)
    svid = loop.run(agent.obtain_identity())
    assert (tmp_path / "sc" / "svid.pem").stat().st_mode & 0o777 == 0o600
    assert sidecar.identity.info.spiffe_id.uri == "spiffe://demo.local/ns/ml/sa/model"
    loop.run(agent.initial_snapshot())
    assert sidecar.config.generation == 1
    loop.call(agent.start, "127.0.0.1:9")
    try:
        status = wait_for(
            lambda: operator.request("GET", "/v1/status")[1]["sidecars"], 10, what="registration"
        )
        assert status[0]["inbound"] == "127.0.0.1:9" and status[0]["ack"]["status"] == "ACK"

        # a generation the sidecar cannot take (its own workload changed under it): NACK, old one stays
        operator.request("POST", "/v1/config/apply", {"text": _workload("{app: model, version: v2}")})

        def nacked() -> dict[str, object] | None:
            ack = operator.request("GET", "/v1/status")[1]["sidecars"][0]["ack"]
            return ack if ack["status"] == "NACK" else None

        ack = wait_for(nacked, 10, what="NACK of generation 2")
        assert ack["generation"] == 2 and "SnapshotRejected" in str(ack["reason"])
        assert sidecar.config.generation == 1

        # back to a generation it can take: its ACK rides on the next watch request
        operator.request("POST", "/v1/config/apply", {"text": _workload("{app: model}")})

        def acked() -> dict[str, object] | None:
            ack = operator.request("GET", "/v1/status")[1]["sidecars"][0]["ack"]
            return ack if ack["status"] == "ACK" else None

        assert wait_for(acked, 10, what="ACK of generation 3")["generation"] == 3
        assert sidecar.config.generation == 3
    finally:
        loop.run(agent.stop())
    assert operator.request("GET", "/v1/status")[1]["sidecars"] == []  # unregistered

    # the control plane goes away: a restarted sidecar needs neither it nor a token
    plane.close()
    again, sidecar2 = _agent(plane.url, mesh_state, tmp_path / "sc", token=None)
    assert loop.run(again.obtain_identity()).chain_pem == svid.chain_pem
    assert loop.run(again.initial_snapshot(timeout=1)).generation == 3  # the last one it took
    assert sidecar2.config.generation == 3


def test_without_cache_or_token_the_agent_says_why(
    plane: ControlPlane, mesh_state: MeshState, tmp_path: Path, loop: LoopThread
) -> None:
    agent, _ = _agent(plane.url, mesh_state, tmp_path / "sc", token=None)
    with pytest.raises(IdentityError, match="no valid cached SVID"):
        loop.run(agent.obtain_identity())
    bad, _ = _agent(plane.url, mesh_state, tmp_path / "sc2", token="not-a-token")
    with pytest.raises(IdentityError, match="refused the join token"):
        loop.run(bad.obtain_identity())


def test_renewal_at_half_life_swaps_the_identity_and_the_cache(
    plane: ControlPlane, mesh_state: MeshState, operator: ControlClient, tmp_path: Path, loop: LoopThread
) -> None:
    operator.request("POST", "/v1/config/apply", {"text": _workload("{app: model}")})
    # a cached SVID already past its half-life (valid 30 s more, backdated by a minute)
    minted = tmp_path / "minted"
    IdentityService(mesh_state).mint("ml/model", minted, dt.timedelta(seconds=30))
    directory = tmp_path / "sc"
    directory.mkdir(mode=0o700)
    write_private(
        directory / "svid.pem", (minted / "key.pem").read_bytes() + (minted / "cert.pem").read_bytes()
    )
    write_public(directory / "bundle.pem", (minted / "bundle.pem").read_bytes())
    agent, sidecar = _agent(plane.url, mesh_state, directory, token=None)
    old = loop.run(agent.obtain_identity())
    loop.run(agent.initial_snapshot())
    old_serial = sidecar.identity.info.serial
    loop.call(agent.start, None)
    try:
        wait_for(lambda: sidecar.identity.info.serial != old_serial, 15, what="a renewed SVID")
    finally:
        loop.run(agent.stop())
    renewed = agent.svid
    assert renewed is not None and renewed.not_after > old.not_after
    assert (directory / "svid.pem").read_bytes() == renewed.key_pem + renewed.chain_pem
    assert renewed.key_pem != old.key_pem  # a new key for each SVID
