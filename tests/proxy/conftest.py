"""Fixtures for the sidecar's end-to-end tests: a recording test app and sidecar pairs."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.proc import PYTHON, Proc, free_port, spawn, wait_port
from tests.support.sidecar import MeshPair, mesh_pair

APP = Path(__file__).with_name("app.py")


@dataclass
class RecordingApp:
    port: int
    proc: Proc

    def _get(self, path: str) -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            doc: dict[str, object] = json.loads(r.read())
            return doc

    def count(self) -> int:
        """Requests that reached the app (its own endpoints excluded)."""
        n = self._get("/__stats")["count"]
        assert isinstance(n, int)
        return n

    def big_sent(self) -> int:
        """Bytes of ``/big`` the app managed to write so far."""
        n = self._get("/__stats")["big_sent"]
        assert isinstance(n, int)
        return n

    def release(self) -> None:
        """Let the SSE endpoint send its next event."""
        self._get("/__release")


@pytest.fixture(scope="session")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingApp]:
    port = free_port()
    proc = spawn([PYTHON, str(APP), str(port)], tmp_path_factory.mktemp("app") / "app.log")
    try:
        wait_port(port)
        yield RecordingApp(port, proc)
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def pair(app: RecordingApp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshPair]:
    """client (web/webapp) → server (llm/chat) in front of the test app; STRICT, allow-all."""
    with mesh_pair(
        tmp_path_factory.mktemp("pair"),
        app.port,
        default_policy="allow",
        server_options={"max_request_body": 100_000, "max_header_bytes": 8192},
    ) as p:
        yield p
