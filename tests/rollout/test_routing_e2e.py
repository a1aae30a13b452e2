"""Real sidecars in front of two real chat model replicas (v1, v2) behind one service.

client app (httpx) → client sidecar ─mTLS─▶ {v1 sidecar → chat v1, v2 sidecar → chat v2}

One mesh serves every check, in order: weights over real traffic, sticky sessions, the header
and model-name rules (with aliasing), mirroring with its measured difference rate (v2 leaks an
email address, so every mirrored answer differs), then v1's app is killed and GETs keep
succeeding (retried, then v1 ejected).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshward.config.snapshot import ServiceEntry
from meshward.identity.spiffe import parse_identity
from meshward.resources.modelroute import WEIGHT_ANNOTATION
from tests.support.models import example_model
from tests.support.proc import PYTHON, free_port, spawn, wait_for
from tests.support.sidecar import (
    TRUST_DOMAIN,
    SidecarProc,
    issue_svid,
    make_snapshot,
    start_sidecar,
    write_bootstrap,
)

pytestmark = pytest.mark.e2e

ALLOW = {"defaultPolicy": "allow"}
ROUTE = {
    "apiVersion": "meshward.dev/v1alpha1",
    "kind": "ModelRoute",
    "metadata": {"name": "chat", "namespace": "llm", "annotations": {WEIGHT_ANNOTATION: "30"}},
    "spec": {
        "service": "chat",
        "subsets": {"stable": {"version": "v1"}, "canary": {"version": "v2"}},
        "stickyBy": "request.headers[x-session]",
        "rules": [
            {"match": {"headers": {"x-canary": "yes"}}, "route": [{"subset": "canary"}]},
            {"match": {"models": ["chat-next"]}, "route": [{"subset": "canary"}]},
        ],
        "aliases": {"chat-next": {"canary": "chat-v2"}},
        "mirror": {"subset": "canary", "percent": 50},
        "rollout": {"steps": [30, 100], "interval": "1s"},
    },
}


class Mesh:
    def __init__(self, client: SidecarProc, state: Path, v1_proc: Any) -> None:
        self.client = client
        self.state = state
        self.v1_proc = v1_proc
        self.http = httpx.Client(proxy=client.proxy_url, timeout=20, trust_env=False)

    def instance(self, **headers: str) -> str:
        r = self.http.get("http://chat.llm/v1/models", headers=headers)
        assert r.status_code == 200, r.text
        return r.headers["x-model-instance"]

    def windows(self) -> list[dict[str, Any]]:
        found = []
        for seg in self.state.glob("audit/spool-*/seg-*.jsonl"):
            for line in seg.read_text().splitlines():
                event = json.loads(line)["event"]
                body = event.get("unmapped", {}).get("meshward", {}).get("rollout")
                if body is not None:
                    found.append(body)
        return found


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("routing")
    server_id = parse_identity("llm/chat", TRUST_DOMAIN)
    v1_port = free_port()
    v1 = spawn(
        [PYTHON, "-m", "examples.models.chat", "--port", str(v1_port), "--echo", "--instance", "v1"],
        tmp / "v1.log",
    )
    started: list[SidecarProc] = []
    try:
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{v1_port}/health", timeout=1).status_code == 200,
            timeout=30,
            what="chat v1",
        )
        with example_model(
            tmp, "examples.models.chat", "--echo", "--instance", "v2", "--leak-emails"
        ) as v2_port:
            endpoints: dict[str, dict[str, str]] = {}
            for version, port in (("v1", v1_port), ("v2", v2_port)):
                svid = issue_svid(tmp / version, "llm/chat")
                snap = make_snapshot("llm/chat", labels={"version": version}, mesh=ALLOW)
                boot = write_bootstrap(tmp / f"{version}.json", svid, snap, app=f"127.0.0.1:{port}")
                sc = start_sidecar(boot, version)
                started.append(sc)
                endpoints[f"127.0.0.1:{sc.inbound_port}"] = {"app": "chat", "version": version}
            entry = ServiceEntry("chat", "llm", tuple(sorted(endpoints)), (server_id.uri,), endpoints)
            client_snap = make_snapshot("web/webapp", services=[entry], policies=[ROUTE], mesh=ALLOW)
            state = tmp / "client-state"
            boot = write_bootstrap(
                tmp / "client.json",
                issue_svid(tmp / "client", "web/webapp"),
                client_snap,
                options={"state_dir": str(state)},
            )
            client = start_sidecar(boot, "client")
            started.append(client)
            m = Mesh(client, state, v1)
            yield m
            m.http.close()
    finally:
        for sc in started:
            sc.stop()
        v1.stop()


def test_weights_hold_over_real_traffic(mesh: Mesh) -> None:
    counts = Counter(mesh.instance() for _ in range(400))
    assert abs(counts["v2"] / 400 * 100 - 30) <= 5, counts


def test_sticky_sessions_and_header_rule(mesh: Mesh) -> None:
    for session in ("alice", "bob", "carol", "dave"):
        seen = {mesh.instance(**{"x-session": session}) for _ in range(15)}
        assert len(seen) == 1, (session, seen)
    assert {mesh.instance(**{"x-canary": "yes"}) for _ in range(20)} == {"v2"}


def test_model_name_rule_with_alias(mesh: Mesh) -> None:
    body = {"model": "chat-next", "messages": [{"role": "user", "content": "hello"}]}
    for _ in range(5):
        r = mesh.http.post("http://chat.llm/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.headers["x-model-instance"] == "v2"
        assert r.json()["model"] == "chat-v2"  # the canary saw the alias


def test_mirror_measures_difference_rate(mesh: Mesh) -> None:
    def totals() -> tuple[int, int]:
        mirrors = [w["mirror"] for w in mesh.windows() if "mirror" in w]
        return sum(m["compared"] for m in mirrors), sum(m["differ"] for m in mirrors)

    # earlier tests' GETs were mirrored too: identical answers (0 differ), still being flushed
    before_differ = totals()[1]
    body = {"model": "chat", "messages": [{"role": "user", "content": "same question"}]}
    on_v1 = 0
    for _ in range(40):
        r = mesh.http.post("http://chat.llm/v1/chat/completions", json=body)
        assert r.status_code == 200
        leaked = "jane.doe" in r.text
        assert leaked == (r.headers["x-model-instance"] == "v2")  # the shadow's answer is discarded
        on_v1 += r.headers["x-model-instance"] == "v1"

    def settled() -> tuple[int, int] | None:
        now = totals()
        return now if now[1] - before_differ >= on_v1 // 2 else None

    compared, differ = wait_for(settled, timeout=20, what="mirror comparisons in the audit spool")
    # v2 always adds an email: every shadowed chat answer differs, exactly 50 % of v1's were shadowed
    assert differ - before_differ in (on_v1 // 2, (on_v1 + 1) // 2)
    assert 0 < differ / compared < 1  # the difference rate the control plane reads


def test_killed_endpoint_ejected_without_failed_requests(mesh: Mesh) -> None:
    mesh.v1_proc.stop()  # its sidecar stays: it answers 503 "not delivered" until ejected
    results = Counter()
    body = {"model": "chat", "messages": [{"role": "user", "content": "still there?"}]}
    for i in range(200):
        if i % 4:  # idempotent: retried on another endpoint
            r = mesh.http.get("http://chat.llm/v1/models")
        else:  # POST: retried too, as the failed endpoint never delivered it to an app
            r = mesh.http.post("http://chat.llm/v1/chat/completions", json=body)
        results[(r.status_code, r.headers.get("x-model-instance"))] += 1
    assert results == Counter({(200, "v2"): 200})
