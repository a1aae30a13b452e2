"""Finding 1: a workload could freeze config distribution for the whole mesh by registering
``127.0.0.1:99999`` (or registering for another workload). Against a real control plane and
real sidecar processes: the attack is refused, an endpoint that got into the store anyway is
skipped (not the snapshot), the operator can list and remove it, and an emergency DENY applied
afterwards is enforced by a real sidecar."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from meshward.config.snapshot import ServiceEntry
from meshward.config.store import ConfigStore, SidecarRecord
from meshward.control.client import ControlRefused
from meshward.control.limits import MAX_SIDECARS_PER_WORKLOAD
from meshward.proxy.routes import RouteTable
from tests.security.controlled_mesh import (
    CHAT_FOR_WEBAPP,
    ControlledMesh,
    controlled_mesh,
    webapp_chat_policy,
)
from tests.support.models import example_model
from tests.support.proc import PYTHON, ROOT, wait_for
from tests.support.sidecar import make_snapshot

EMERGENCY_DENY = webapp_chat_policy("emergency-deny", "DENY")
BAD_INBOUNDS = [
    "127.0.0.1:99999",
    "127.0.0.1:0",
    "127.0.0.1:٣٣",  # Unicode digits: str.isdigit() says yes, int() says 33
    "127.0.0.1:+80",
    "0.0.0.0:8443",
    "evil.example.com:443",
    "::1:8443",
    "[::1]:65536",
    "127.0.0.1:8443\n",
    "x" * 300 + ":80",
]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlledMesh]:
    base = tmp_path_factory.mktemp("registration")
    with example_model(base, "examples.models.chat") as port, controlled_mesh(base, CHAT_FOR_WEBAPP) as m:
        m.chat = m.sidecar("llm/chat", app_port=port)  # type: ignore[attr-defined]
        m.webapp = m.sidecar("web/webapp")  # type: ignore[attr-defined]
        yield m


def _chat(proxy: str) -> int:
    body = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(proxy=proxy, trust_env=False, timeout=20) as http:
        return http.post("http://chat.llm/v1/chat/completions", json=body).status_code


def test_bad_registrations_are_refused_and_a_later_deny_is_enforced(mesh: ControlledMesh) -> None:
    assert wait_for(lambda: _chat(mesh.webapp.proxy_url) == 200, 20, what="allowed chat")  # type: ignore[attr-defined]
    _, svid = mesh.mint("web/webapp")  # the attacker holds a real SVID of a real workload
    with mesh.client_as(svid) as attacker:
        for inbound in BAD_INBOUNDS:
            body = {"workload": "web/webapp", "sidecar": "web/webapp#evil", "inbound": inbound}
            with pytest.raises(ControlRefused) as refused:
                attacker.request("POST", "/v1/sidecars/register", body)
            assert refused.value.status in (400, 413), inbound
        # another workload's name, and the reserved namespace
        for workload in ("llm/chat", "meshward-system/control", "llm/../chat", "web/webapp/x"):
            body = {"workload": workload, "sidecar": workload, "inbound": "127.0.0.1:8443"}
            with pytest.raises(ControlRefused) as refused:
                attacker.request("POST", "/v1/sidecars/register", body)
            assert refused.value.status in (400, 403), workload
    with mesh.operator() as op:
        registered = {s["sidecar"]: s["inbound"] for s in op.request("GET", "/v1/status")[1]["sidecars"]}
    assert "web/webapp#evil" not in registered and "llm/chat" in registered

    generation = mesh.apply(EMERGENCY_DENY)
    wait_for(lambda: mesh.acked("llm/chat", generation), 20, what="the chat sidecar to ACK the DENY")
    assert wait_for(lambda: _chat(mesh.webapp.proxy_url) == 403, 20, what="the DENY enforced")  # type: ignore[attr-defined]


def test_a_stored_bad_endpoint_is_skipped_listed_and_removable(mesh: ControlledMesh) -> None:
    # As an older control plane would have stored it: straight into the store.
    record = SidecarRecord(
        "web/webapp#old", "web", "webapp", "spiffe://demo.local/ns/web/sa/webapp", "127.0.0.1:99999"
    )
    mesh.plane.store.register_sidecar(record)
    mesh.plane.service._notify()  # what a registration does
    generation = mesh.apply(EMERGENCY_DENY.replace("emergency-deny", "second-deny"))
    wait_for(lambda: mesh.acked("llm/chat", generation), 20, what="an ACK despite the bad endpoint")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "meshward", "endpoints", *args, "--state", str(mesh.state.path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["sidecar"]: r for r in json.loads(listed.stdout)}
    assert rows["web/webapp#old"]["valid"] is False and "1-65535" in rows["web/webapp#old"]["problem"]
    assert rows["llm/chat"]["valid"] is True
    removed = cli("remove", "web/webapp#old", "--json")
    assert removed.returncode == 0 and json.loads(removed.stdout) == {"removed": "web/webapp#old"}
    again = cli("remove", "web/webapp#old")
    assert again.returncode != 0 and again.stderr.count("\n") == 1 and "Traceback" not in again.stderr
    with mesh.operator() as op:
        assert "web/webapp#old" not in {
            r["sidecar"] for r in op.request("GET", "/v1/endpoints")[1]["endpoints"]
        }


def test_the_sidecar_route_table_skips_a_bad_endpoint_and_keeps_the_rest() -> None:
    good = ServiceEntry(
        "chat", "llm", ("127.0.0.1:99999", "127.0.0.1:8443"), ("spiffe://demo.local/ns/llm/sa/chat",)
    )
    bad = ServiceEntry("tool", "llm", ("bad:host:x",), ("spiffe://demo.local/ns/llm/sa/tool",))
    table = RouteTable(make_snapshot("web/webapp", services=[good, bad]))
    route = table.resolve("chat.llm")
    assert route is not None and [(t.host, t.port) for t in route.targets] == [("127.0.0.1", 8443)]
    assert len(table.skipped) == 2 and any("99999" in s for s in table.skipped)


def test_one_workload_cannot_flood_the_services_table_or_the_acks(mesh: ControlledMesh) -> None:
    _, svid = mesh.mint("lab/flood")  # no Workload declared: its registrations are its own only
    with mesh.client_as(svid) as attacker:
        statuses = []
        for i in range(MAX_SIDECARS_PER_WORKLOAD + 3):
            body = {"workload": "lab/flood", "sidecar": f"lab/flood#{i}", "inbound": f"127.0.0.1:{20000 + i}"}
            try:
                statuses.append(attacker.request("POST", "/v1/sidecars/register", body)[0])
            except ControlRefused as exc:
                statuses.append(exc.status)
            ack = {"workload": "lab/flood", "sidecar": f"lab/flood#ack{i}", "generation": 1, "ok": True}
            try:
                statuses.append(attacker.request("POST", "/v1/sidecars/ack", ack)[0])
            except ControlRefused as exc:
                statuses.append(exc.status)
        assert statuses.count(429) == 6 and statuses[-1] == 429
        for i in range(MAX_SIDECARS_PER_WORKLOAD):
            attacker.request(
                "POST", "/v1/sidecars/unregister", {"workload": "lab/flood", "sidecar": f"lab/flood#{i}"}
            )


def test_an_ack_carried_by_a_watch_is_checked_like_a_posted_one(mesh: ControlledMesh) -> None:
    _, svid = mesh.mint("lab/watcher")
    with mesh.client_as(svid) as watcher:

        def watch(extra: str) -> int:
            try:
                return watcher.request("GET", f"/v1/watch?workload=lab/watcher&have=&timeout=1{extra}")[0]
            except ControlRefused as exc:
                return exc.status

        assert watch("&ack=x1&sidecar=lab/watcher") == 400  # not a generation
        assert watch("&ack=99999999999999999999&sidecar=lab/watcher") == 400  # too long
        assert watch("&ack=3&sidecar=lab/other") == 400  # not its own sidecar id
        assert watch("&ack=3") == 400  # no sidecar id at all
        assert watch("&ack=3&sidecar=lab/watcher%23w2") == 200
        ack = ConfigStore(mesh.state.db_path).acks()["lab/watcher#w2"]
        assert (ack.generation, ack.status) == (3, "ACK")
        statuses = [watch(f"&ack=1&sidecar=lab/watcher%23f{i}") for i in range(MAX_SIDECARS_PER_WORKLOAD + 1)]
        assert statuses[-1] == 429  # the same cap as posted ACKs
