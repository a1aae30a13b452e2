"""Fixtures: an initialized mesh state and its identity service, per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from meshward.identity.bootstrap import init_mesh
from meshward.identity.issuance import IdentityService
from meshward.identity.state import MeshState

TRUST_DOMAIN = "demo.local"


@pytest.fixture
def mesh(tmp_path: Path) -> MeshState:
    state = MeshState(tmp_path / "state")
    init_mesh(state, TRUST_DOMAIN)
    return state


@pytest.fixture
def service(mesh: MeshState) -> Iterator[IdentityService]:
    with IdentityService(mesh) as svc:
        yield svc
