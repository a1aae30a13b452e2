"""A real control plane (HTTPS, mTLS) in this process, on a free port, for one test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from meshward.control.client import ControlClient, operator_client
from meshward.control.server import ControlPlane
from meshward.identity.bootstrap import init_mesh
from meshward.identity.state import MeshState
from tests.support.loop import LoopThread


@pytest.fixture
def mesh_state(tmp_path: Path) -> MeshState:
    state = MeshState(tmp_path / "state")
    init_mesh(state, "demo.local")
    return state


@pytest.fixture
def plane(mesh_state: MeshState) -> Iterator[ControlPlane]:
    control = ControlPlane(mesh_state, ("127.0.0.1", 0))
    control.start()
    try:
        yield control
    finally:
        control.close()


@pytest.fixture
def operator(plane: ControlPlane, mesh_state: MeshState) -> Iterator[ControlClient]:
    client = operator_client(mesh_state)
    assert client is not None
    with client:
        yield client


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    """The sidecar's event loop, in a thread: the control agent's tasks run on it."""
    with LoopThread() as running:
        yield running
