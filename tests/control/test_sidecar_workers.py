"""``meshward proxy --control URL --workers N``: one sidecar, N processes sharing its ports.

Against a real control plane and real sidecar processes: the join token is spent once, every
worker answers each generation itself (worker 0 as the workload's sidecar, the others as
``<ref>#wN``), only one inbound endpoint is registered, traffic flows through the workers, and
a stopped sidecar leaves no registration or ACK row behind."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from meshward.config.store import ConfigStore
from meshward.control.client import ControlClient
from tests.security.controlled_mesh import (
    CHAT_FOR_WEBAPP,
    ControlledMesh,
    controlled_mesh,
    webapp_chat_policy,
)
from tests.support.models import example_model
from tests.support.proc import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlledMesh, int]]:
    base = tmp_path_factory.mktemp("workers")
    with example_model(base, "examples.models.chat") as port, controlled_mesh(base, CHAT_FOR_WEBAPP) as m:
        yield m, port


def _status(op: ControlClient) -> dict[str, Any]:
    return op.request("GET", "/v1/status")[1]


def _acks(m: ControlledMesh) -> dict[str, dict[str, Any]]:
    """Every sidecar's last answer, as ``meshward status`` reads them (the store)."""
    return {name: ack.summary() for name, ack in ConfigStore(m.state.db_path).acks().items()}


def test_workers_share_the_ports_and_each_answers_every_generation(mesh: tuple[ControlledMesh, int]) -> None:
    m, port = mesh
    chat = m.sidecar("llm/chat", app_port=port, workers=2)
    assert chat.info["workers"] == 2 and len(chat.info["worker_pids"]) == 2
    webapp = m.sidecar("web/webapp")
    with m.operator() as op:
        wait_for(lambda: {"llm/chat", "llm/chat#w1"} <= set(_acks(m)), 20, what="both workers' ACKs")
        endpoints = [s for s in _status(op)["sidecars"] if s.get("inbound")]
        assert [s["sidecar"] for s in endpoints if s["sidecar"].startswith("llm/chat")] == ["llm/chat"]

        body = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(proxy=webapp.proxy_url, trust_env=False, timeout=20) as http:
            codes = {
                http.post("http://chat.llm/v1/chat/completions", json=body).status_code for _ in range(8)
            }
        assert codes == {200}

        generation = m.apply(webapp_chat_policy("webapp-chat", "DENY"))

        def both_took_it() -> bool:
            acks = _acks(m)
            return all(acks.get(s, {}).get("generation") == generation for s in ("llm/chat", "llm/chat#w1"))

        wait_for(both_took_it, 20, what=f"generation {generation} ACKed by both workers")
        assert all(_acks(m)[s]["status"] == "ACK" for s in ("llm/chat", "llm/chat#w1"))
        with httpx.Client(proxy=webapp.proxy_url, trust_env=False, timeout=20) as http:
            denied = {
                http.post("http://chat.llm/v1/chat/completions", json=body).status_code for _ in range(8)
            }
        assert denied == {403}  # whichever worker the kernel picked enforces the new generation

        chat.proc.popen.send_signal(signal.SIGTERM)
        assert chat.proc.popen.wait(20) == 0
        assert not {"llm/chat"} & {s["sidecar"] for s in _status(op)["sidecars"]}  # unregistered
        assert not {"llm/chat", "llm/chat#w1"} & set(_acks(m))  # and no ACK row left behind
