"""Egress end to end: the openai SDK in an app run with ``meshward run``, a fake provider outside.

A real control plane (``meshward control``), the app behind ``meshward run --as llm/summarizer``
(a Workload whose service account differs from its name: the run carries its labels) and one
behind ``--as llm/other``, each a real sidecar process; the provider is an OpenAI-compatible
HTTPS server on loopback with its own CA, reached as ``api.llm.example`` through ``addresses``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshward.cli.main import main
from meshward.control.client import read_control_info
from tests.egress.provider import FakeProvider
from tests.support.proc import PYTHON, ROOT, Proc, spawn, wait_for

pytestmark = pytest.mark.e2e

KEY_1 = "sk-real-provider-key-1-8f3a9c"
KEY_2 = "sk-rotated-provider-key-2-b71e04"
APP_KEY = "sk-app-dummy-key-not-the-real-one"
CARD = "4111 1111 1111 1111"

MESH = """\
apiVersion: meshward.dev/v1alpha1
kind: Workload
metadata: {{name: summarizer, namespace: llm, labels: {{app: summarizer}}}}
spec: {{serviceAccount: summarizer-sa}}
---
apiVersion: meshward.dev/v1alpha1
kind: Workload
metadata: {{name: other, namespace: llm, labels: {{app: other}}}}
spec: {{}}
---
apiVersion: meshward.dev/v1alpha1
kind: ExternalService
metadata: {{name: llm-provider, namespace: llm}}
spec:
  hosts: [api.llm.example]
  ports: [{{number: 443, protocol: HTTPS}}]
  addresses: ["127.0.0.1:{port}"]
  caBundle: {ca}
  protocol: openai
  credential: {{secret: llm-key, header: Authorization, format: "Bearer {{secret}}"}}
  pricing: [{{model: "gpt-4o*", inputPerMillion: 150, outputPerMillion: 600}}]
---
apiVersion: meshward.dev/v1alpha1
kind: ExternalService
metadata: {{name: impostor, namespace: llm}}
spec:
  hosts: [wrong.llm.example]
  addresses: ["127.0.0.1:{bad_port}"]
  caBundle: {ca}
  protocol: openai
---
apiVersion: meshward.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: summarizer-may-chat, namespace: llm}}
spec:
  selector: {{matchLabels: {{app: summarizer}}}}
  rules:
  - to: [{{hosts: [api.llm.example], methods: [POST], paths: ["/v1/chat/completions"],
          models: ["gpt-4o-mini", "budget-model"]}}]
  - to: [{{hosts: [wrong.llm.example]}}]
---
apiVersion: meshward.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: other-may-embed, namespace: llm}}
spec:
  selector: {{matchLabels: {{app: other}}}}
  rules:
  - to: [{{hosts: [api.llm.example], paths: ["/v1/embeddings"]}}]
---
apiVersion: meshward.dev/v1alpha1
kind: DataProtectionPolicy
metadata: {{name: no-cards-out, namespace: llm, annotations: {{meshward.dev/applies-to: egress}}}}
spec:
  selector: {{matchLabels: {{app: summarizer}}}}
  direction: request
  detectors: [credit_card]
  action: mask
---
apiVersion: meshward.dev/v1alpha1
kind: RateLimitPolicy
metadata: {{name: provider-budget, namespace: llm, annotations: {{meshward.dev/applies-to: egress}}}}
spec:
  selector: {{matchLabels: {{app: summarizer}}}}
  limits:
  - name: budget-tokens
    match: {{models: [budget-model]}}
    key: source.principal
    tokens: {{limit: 60, per: hour, count: total}}
"""


def cli(state: Path, *args: str, stdin: str | None = None) -> str:
    """``meshward ARGS --state STATE`` in this process (its stdout); a failure fails the test."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin or "")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*args, "--state", str(state)])
    finally:
        sys.stdin = saved
    assert code == 0, f"meshward {' '.join(args)} failed: {err.getvalue()}"
    return out.getvalue()


class App:
    """``meshward run --as ID -- python tests/egress/driver.py``, driven line by line."""

    def __init__(self, state: Path, identity: str, log: Path) -> None:
        env = dict(os.environ, MESHWARD_SECRET_REFRESH="1", PYTHONUNBUFFERED="1")
        self.log = log
        with open(log, "wb") as err:
            self.popen = subprocess.Popen(
                [
                    PYTHON,
                    "-m",
                    "meshward",
                    "run",
                    "--as",
                    identity,
                    "--state",
                    str(state),
                    "--",
                    PYTHON,
                    "-m",
                    "tests.egress.driver",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )

    def ask(self, timeout: float = 30.0, **cmd: Any) -> dict[str, Any]:
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self.popen.stdin.write((json.dumps(cmd) + "\n").encode())
        self.popen.stdin.flush()
        ready, _, _ = select.select([self.popen.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"no answer to {cmd} within {timeout}s: {self.log.read_text()[-2000:]}")
        line = self.popen.stdout.readline()
        if not line:
            raise RuntimeError(f"the app exited: {self.log.read_text()[-2000:]}")
        result: dict[str, Any] = json.loads(line)
        return result

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            assert self.popen.stdin is not None
            self.popen.stdin.write(b'{"op": "quit"}\n')
            self.popen.stdin.close()
        try:
            self.popen.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, 9)
            self.popen.wait(5)


@dataclass
class Egress:
    tmp: Path
    state: Path
    provider: FakeProvider
    impostor: FakeProvider
    control: Proc
    summarizer: App
    other: App


@pytest.fixture(scope="module")
def egress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Egress]:
    tmp = tmp_path_factory.mktemp("egress")
    state = tmp / "state"
    with FakeProvider(tmp / "provider", "api.llm.example") as provider:
        ca = (provider.ca_key, provider.ca_cert, provider.ca_path)
        with FakeProvider(tmp / "impostor", "other.example", ca) as impostor:
            cli(state, "init", "--trust-domain", "demo.local")
            control = spawn(
                [PYTHON, "-m", "meshward", "control", "--state", str(state), "--listen", "127.0.0.1:0"],
                tmp / "control.log",
            )
            apps: list[App] = []
            try:
                info = wait_for(lambda: read_control_info(state), 30, what="control.json")
                wait_for(lambda: _healthy(info.url), 30, what="control plane health")
                mesh = tmp / "egress.yaml"
                mesh.write_text(MESH.format(port=provider.port, bad_port=impostor.port, ca=provider.ca_path))
                cli(state, "apply", "-f", str(mesh))
                cli(state, "secret", "set", "llm-key", stdin=KEY_1 + "\n")
                apps.append(App(state, "llm/summarizer", tmp / "summarizer.log"))
                apps.append(App(state, "llm/other", tmp / "other.log"))
                yield Egress(tmp, state, provider, impostor, control, apps[0], apps[1])
            finally:
                for app in apps:
                    app.stop()
                control.stop()


def _healthy(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/healthz", verify=False, timeout=1).status_code == 200
    return False


def _chat(app: App, **kw: Any) -> dict[str, Any]:
    return app.ask(op="chat", **{"model": "gpt-4o-mini", "content": "summarize the mesh", **kw})


def test_allowed_identity_gets_answers_with_the_injected_key(egress: Egress) -> None:
    before = len(egress.provider.seen)
    plain = _chat(egress.summarizer, content="hello provider")
    assert plain["status"] == 200 and plain["text"] == "hello provider" and plain["tokens"] > 0
    streamed = _chat(egress.summarizer, content="stream me please", stream=True)
    assert streamed["status"] == 200 and streamed["text"] == "stream me please" and streamed["tokens"] > 0
    seen = egress.provider.seen[before:]
    assert len(seen) == 2
    assert {s.authorization for s in seen} == {f"Bearer {KEY_1}"}  # the app's key never left
    metrics = httpx.get(f"http://{_sidecar_ready(egress)['admin']}/stats/prometheus", timeout=10).text
    spent = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("meshward_egress_tokens_total{")
        and 'model="gpt-4o-mini"' in line
        and 'source_principal="demo.local/ns/llm/sa/summarizer-sa"' in line
    ]
    assert len(spent) == 2 and all(n > 0 for n in spent)  # input and output tokens, per identity and model
    cost = [line for line in metrics.splitlines() if line.startswith("meshward_egress_cost_total{")]
    assert len(cost) == 1 and 'model="gpt-4o-mini"' in cost[0] and float(cost[0].rsplit(" ", 1)[1]) > 0


def test_other_model_path_identity_and_undeclared_host_are_refused(egress: Egress) -> None:
    before = len(egress.provider.seen)
    model = _chat(egress.summarizer, model="gpt-4o")
    assert model["status"] == 403 and model["body"]["host"] == "api.llm.example"
    assert model["body"]["reason"] == "egress_policy"
    path = egress.summarizer.ask(
        op="http",
        method="POST",
        url="http://api.llm.example/v1/embeddings",
        json={"model": "gpt-4o-mini", "input": "x"},
    )
    assert path["status"] == 403 and path["body"]["reason"] == "egress_policy"
    identity = _chat(egress.other)
    assert identity["status"] == 403 and "no EgressPolicy rule allows" in str(identity["body"]["error"])
    undeclared = egress.summarizer.ask(op="http", method="GET", url="http://api.unknown.example/v1/models")
    assert undeclared["status"] == 403
    assert (
        undeclared["body"]["host"] == "api.unknown.example"
        and undeclared["body"]["reason"] == "not_registered"
    )
    assert "REGISTRY_ONLY" in str(undeclared["body"]["error"])
    assert len(egress.provider.seen) == before  # nothing reached the provider

    def audited() -> bool:
        out = cli(egress.state, "audit", "tail", "-n", "200", "--format", "ocsf")
        records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        hosts = {
            (r.get("http_request", {}).get("url", {}).get("hostname"), r.get("http_response", {}).get("code"))
            for r in records
        }
        return ("api.unknown.example", 403) in hosts and ("api.llm.example", 403) in hosts

    wait_for(audited, 30, interval=0.3, what="the egress denials in the control plane's audit trail")


def test_card_number_leaving_the_mesh_is_masked(egress: Egress) -> None:
    before = len(egress.provider.seen)
    answer = _chat(egress.summarizer, content=f"my card is {CARD} thanks")
    assert answer["status"] == 200
    seen = egress.provider.seen[before:]
    assert len(seen) == 1 and b"my card is" in seen[0].body
    assert CARD.encode() not in seen[0].body and CARD.replace(" ", "").encode() not in seen[0].body
    assert CARD not in answer["text"]


def test_token_budget_stops_the_caller_streamed_or_not(egress: Egress) -> None:
    statuses = []
    for i in range(12):
        r = _chat(
            egress.summarizer, model="budget-model", content="one two three four five six", stream=i % 2 == 1
        )
        statuses.append(r["status"])
        if r["status"] == 429:
            break
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    assert _chat(egress.summarizer, model="budget-model", stream=True)["status"] == 429
    assert _chat(egress.summarizer, model="budget-model")["status"] == 429
    assert _chat(egress.summarizer, model="gpt-4o-mini")["status"] == 200  # other models unaffected


def test_server_with_a_certificate_for_another_host_is_refused(egress: Egress) -> None:
    r = _chat(egress.summarizer, host="wrong.llm.example")
    assert r["status"] == 502 and "TLS" in str(r["body"]["error"])
    assert egress.impostor.seen == []


def test_connect_gets_a_host_level_decision(egress: Egress) -> None:
    proxy = _sidecar_ready(egress)["outbound"]
    host, port = proxy.rsplit(":", 1)

    def connect(target: str) -> tuple[bytes, socket.socket]:
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            part = sock.recv(4096)
            if not part:
                break
            head += part
        return head, sock

    head, sock = connect("api.unknown.example:443")
    sock.close()
    assert head.startswith(b"HTTP/1.1 403")
    head, sock = connect("api.llm.example:443")
    assert head.startswith(b"HTTP/1.1 200")
    ctx = ssl.create_default_context(cafile=str(egress.provider.ca_path))
    with ctx.wrap_socket(sock, server_hostname="api.llm.example") as tls:  # the app's own TLS
        tls.sendall(b"GET /v1/models HTTP/1.1\r\nHost: api.llm.example\r\nConnection: close\r\n\r\n")
        reply = tls.recv(4096)
    assert reply.startswith(b"HTTP/1.1 200")


def _sidecar_ready(egress: Egress) -> dict[str, Any]:
    files = sorted((egress.state / "sidecars").glob("llm.summarizer-sa.run-*/ready.json"))
    assert files, "no running sidecar for llm/summarizer"
    doc: dict[str, Any] = json.loads(files[-1].read_text())
    return doc


def test_rotation_takes_effect_without_restarts(egress: Egress) -> None:
    cli(egress.state, "secret", "set", "llm-key", stdin=KEY_2 + "\n")

    def rotated() -> bool:
        before = len(egress.provider.seen)
        assert _chat(egress.summarizer, content="after rotation")["status"] == 200
        return egress.provider.seen[before].authorization == f"Bearer {KEY_2}"

    wait_for(rotated, 20, interval=0.3, what="the rotated key at the provider")


def test_the_secret_appears_nowhere_but_its_store(egress: Egress) -> None:
    state = egress.state
    store = state / "secrets" / "llm-key"
    assert store.read_text() == KEY_2 and (store.stat().st_mode & 0o777) == 0o600
    listed = json.loads(cli(state, "secret", "list", "--json"))
    assert [s["name"] for s in listed["secrets"]] == ["llm-key"] and set(listed["secrets"][0]) == {
        "name",
        "updated",
    }
    dump = httpx.get(f"http://{_sidecar_ready(egress)['admin']}/config_dump", timeout=10)
    assert dump.status_code == 200 and "api.llm.example" in dump.text
    outputs = [
        dump.text,
        cli(state, "get", "ExternalService", "-o", "yaml"),
        cli(state, "get", "ExternalService", "-o", "json"),
        cli(state, "secret", "list"),
        cli(state, "audit", "export", "--format", "ocsf"),
        cli(state, "status", "--json"),
    ]
    assert "llm-provider" in outputs[0]
    files = [p for p in egress.tmp.rglob("*") if p.is_file() and p != store]
    assert len(files) > 20
    for value in (KEY_1, KEY_2):
        for text in outputs:
            assert value not in text
        for path in files:
            assert value.encode() not in path.read_bytes(), f"secret found in {path}"
