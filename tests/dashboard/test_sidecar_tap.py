"""A real sidecar's ``/tap`` is turned off by ``MESHWARD_TAP=off`` (the rest of the admin port
stays). The stream itself is exercised end to end by ``test_dashboard_e2e``; the drop-oldest
queue by ``test_tap_units``."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.proc import free_port
from tests.support.sidecar import mesh_pair

pytestmark = pytest.mark.e2e


def test_tap_off_answers_404(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHWARD_TAP", "off")  # the sidecars inherit it
    # No app behind it: only the admin port is asked.
    with mesh_pair(tmp_path, free_port(), default_policy="allow", server_id="ml/tiny-model") as pair:
        assert httpx.get(f"{pair.server.admin_url}/tap", timeout=10).status_code == 404
        assert httpx.get(f"{pair.server.admin_url}/ready", timeout=10).status_code == 200
