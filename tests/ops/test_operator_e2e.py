"""Day-one operator experience, driven through the CLI against one real mesh (``up --detach``).

A batch Job runs to completion, metering works with no RateLimitPolicy, ``openai`` SDK errors
say why, ``check`` explains a denial, a deleted policy stops applying, ``apply --wait`` explains a
rejection in resource terms, ``doctor`` passes, then fails once the control plane is stopped.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshward.cli.main import main
from tests.mesh.meshctl import Mesh
from tests.support.proc import PYTHON, wait_for

pytestmark = pytest.mark.e2e

MESH = textwrap.dedent(
    """\
    apiVersion: meshward.dev/v1alpha1
    kind: Mesh
    metadata: {name: ops}
    spec:
      trustDomain: demo.local
      trustDomainAliases: [cluster.local]
      pricing: [{model: "*", inputPerMillion: 1000, outputPerMillion: 2000, currency: EUR}]
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: tiny-model, namespace: ml, labels: {app: tiny-model}}
    spec:
      command: ["python", "-m", "examples.quickstart.model", "--port", "{port}"]
      readiness: {httpGet: /health}
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: batch, namespace: web, labels: {app: batch}}
    spec:
      type: Job
      command: ["python", "-m", "tests.ops.sdk_client", "1", "--strict"]
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: crashy, namespace: web, labels: {app: crashy}}
    spec:
      command: ["python", "-c", "raise SystemExit(3)"]
    ---
    # Copied from Istio: the principal's trust domain is an alias of this mesh's.
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {name: chat-callers, namespace: ml}
    spec:
      selector: {matchLabels: {app: tiny-model}}
      rules:
      - from: [{source: {principals: ["cluster.local/ns/web/sa/batch", "demo.local/ns/web/sa/webapp"]}}]
        to: [{operation: {methods: [POST], paths: [/v1/chat/completions]}}]
    """
)

ONE_PER_HOUR = textwrap.dedent(
    """\
    apiVersion: meshward.dev/v1alpha1
    kind: RateLimitPolicy
    metadata: {name: one-per-hour, namespace: ml}
    spec:
      selector: {matchLabels: {app: tiny-model}}
      limits:
      - name: webapp-requests
        key: source.principal
        requests: {limit: 1, per: hour}
    """
)

RELABELED = textwrap.dedent(
    """\
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: tiny-model, namespace: ml, labels: {app: tiny-model, tier: gold}}
    spec:
      command: ["python", "-m", "examples.quickstart.model", "--port", "{port}"]
      readiness: {httpGet: /health}
    """
)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    home = tmp_path_factory.mktemp("ops")
    (home / "mesh.yaml").write_text(MESH)
    m = Mesh(home / "state")
    m.files = home  # type: ignore[attr-defined]
    with m.detached(home / "mesh.yaml"):
        yield m


def _file(mesh: Mesh, name: str, text: str) -> str:
    path: Path = mesh.files / name  # type: ignore[attr-defined]
    path.write_text(text)
    return str(path)


def _cli(mesh: Mesh, *args: str) -> tuple[int, str, str]:
    """A quick command in this process (no interpreter start): exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([args[0], "--state", str(mesh.state), *args[1:]])
    return code, out.getvalue(), err.getvalue()


def _sdk(mesh: Mesh, identity: str, calls: int = 1) -> list[dict[str, Any]]:
    done = mesh.cli("run", "--as", identity, "--", PYTHON, "-m", "tests.ops.sdk_client", str(calls))
    results: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def test_a_batch_job_runs_to_completion_and_up_stays_healthy(mesh: Mesh) -> None:
    batch = wait_for(
        lambda: (w := mesh.workload("batch"))["state"] in ("succeeded", "failed") and w,
        30,
        interval=0.1,
        what="the batch job to finish",
    )
    assert (batch["state"], batch["last_exit"], batch["type"]) == ("succeeded", 0, "Job"), batch["message"]
    doc = mesh.status()
    assert doc["runner"]["state"] == "running" and mesh.workload("tiny-model")["ready"] is True
    crashy = mesh.workload("crashy")  # failed alone: the mesh is up
    assert crashy["ready"] is False and "exited (3) before it was ready" in crashy["message"]
    code, out, _ = _cli(mesh, "status")
    assert code == 0 and "succeeded (0)" in out  # exit 0: the mesh runs
    targets = json.loads((mesh.state / "mesh" / "prometheus-targets.json").read_text())
    assert {t["labels"]["workload"] for t in targets} == {"ml/tiny-model", "web/batch", "web/crashy"}


def test_tokens_are_metered_without_a_ratelimitpolicy(mesh: Mesh) -> None:
    admin = mesh.workload("tiny-model")["admin"]
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    metrics = direct.open(f"http://{admin}/stats/prometheus", timeout=5).read().decode()
    assert "gen_ai_client_token_usage" in metrics and 'gen_ai_request_model="tiny"' in metrics
    log = mesh.state / "sidecars" / "ml.tiny-model" / "access.log"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(entry["model"] == "tiny" and entry["tokens"] for entry in lines)

    def batch_row() -> dict[str, Any] | None:
        rows = json.loads(_cli(mesh, "usage", "--json")[1])["rows"]
        return next((r for r in rows if r["key"] == "spiffe://demo.local/ns/web/sa/batch"), None)

    row = wait_for(batch_row, 20, interval=0.2, what="the batch job's usage in the audit trail")
    assert row["requests"] == 1 and row["total_tokens"] > 0 and row["cost"] > 0 and row["currency"] == "EUR"
    by_model = json.loads(_cli(mesh, "usage", "--by", "model", "--json")[1])["rows"]
    assert [r["key"] for r in by_model] == ["tiny"]


def test_check_agrees_with_the_sidecar_and_names_the_failing_condition(mesh: Mesh) -> None:
    call = ["--to", "tiny-model.ml", "--method", "POST", "--path", "/v1/chat/completions"]
    assert _cli(mesh, "check", "--from", "cluster.local/ns/web/sa/batch", *call)[0] == 0
    code, out, _ = _cli(mesh, "check", "--from", "other.example/ns/web/sa/batch", *call)
    assert code == 1 and "trust domain" in out
    code, out, _ = _cli(mesh, "check", "--from", "lab/intruder", *call, "--json")
    assert code == 1
    [trace] = json.loads(out)["workloads"][0]["trace"]
    assert trace["policy"] == "ml/chat-callers" and trace["failed"] == ["from[0].source.principals"]
    code, _, err = _cli(mesh, "check", "--from", "intruder", *call)
    assert code == 2 and "NS/SA, TRUST-DOMAIN/ns/NS/sa/SA" in err
    code, _, err = _cli(mesh, "check", "--from", "lab/intruder", *call[:-1], "v1/chat")
    assert code == 2 and "must start with '/'" in err


def test_openai_sdk_errors_say_why(mesh: Mesh) -> None:
    [denied] = _sdk(mesh, "lab/intruder")
    assert denied["status"] == 403 and "no ALLOW policy matched" in denied["str"]
    request_id = re.search(r"request id ([\w-]+)", denied["str"]).group(1)  # type: ignore[union-attr]

    def audited() -> str:
        code, out, _ = _cli(mesh, "audit", "tail", "--identity", "lab/intruder", "--decision", "deny")
        return out if code == 0 and f"request_id={request_id}" in out else ""

    wait_for(audited, 20, interval=0.2, what="the denial in the audit trail, with the caller's request id")
    code, out, _ = _cli(mesh, "audit", "tail", "--request-id", request_id)
    assert code == 0 and len(out.splitlines()) == 1
    mesh.cli("apply", "-f", _file(mesh, "limit.yaml", ONE_PER_HOUR), "--wait")
    first, limited = _sdk(mesh, "web/webapp", calls=2)
    assert first["status"] == 200 and limited["status"] == 429
    assert "rate limited" in limited["str"] and "ml/one-per-hour" in limited["str"]
    assert "webapp-requests" in limited["str"] and int(limited["retry_after"]) > 0


def test_a_deleted_policy_stops_applying(mesh: Mesh) -> None:
    code, out, _ = _cli(mesh, "delete", "ratelimitpolicy", "one-per-hour", "-n", "ml")
    assert code == 0 and "ratelimitpolicy ml/one-per-hour deleted" in out
    generation = mesh.status()["control"]["generation"]
    mesh.wait_generation(generation)
    assert [r["status"] for r in _sdk(mesh, "web/webapp")] == [200]  # its one call this hour was used
    history = json.loads(_cli(mesh, "history", "--json")[1])
    assert history[-1]["source"] == "delete"
    assert history[-1]["changes"] == [
        {"kind": "RateLimitPolicy", "namespace": "ml", "name": "one-per-hour", "action": "deleted"}
    ]
    old = _cli(mesh, "get", "ratelimitpolicy", "--generation", str(generation - 1), "-o", "json")[1]
    assert json.loads(old)[0]["metadata"]["name"] == "one-per-hour"
    diff = json.loads(_cli(mesh, "diff", str(generation - 1), str(generation), "--json")[1])
    assert [c["action"] for c in diff["changes"]] == ["deleted"]


def test_apply_wait_explains_a_rejection_in_resource_terms(mesh: Mesh) -> None:
    before = mesh.status()["control"]["generation"]
    code, _, err = _cli(mesh, "apply", "-f", _file(mesh, "relabel.yaml", RELABELED), "--wait")
    assert code == 1, err
    assert "sidecar ml/tiny-model: REJECTED" in err
    assert "Workload ml/tiny-model: metadata.labels changed" in err
    assert "SnapshotRejected" not in err
    assert _cli(mesh, "rollback", str(before))[0] == 0
    mesh.wait_generation(before + 2)


def test_a_deleted_workload_stops_being_routed(mesh: Mesh) -> None:
    crashy = MESH.split("---")[3]  # the crashy Workload's document, deleted by file
    assert "name: crashy" in crashy
    code, out, _ = _cli(mesh, "delete", "-f", _file(mesh, "crashy.yaml", crashy))
    assert code == 0 and out.strip() == "workload web/crashy deleted"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def services() -> set[str]:
        # Read the admin address each time: the running mesh restarts a Workload whose spec a
        # generation changed (earlier tests change and roll back tiny-model), on new ports.
        admin = mesh.workload("tiny-model")["admin"]
        doc = json.loads(direct.open(f"http://{admin}/config_dump", timeout=5).read())
        return {s["service"] for s in doc["snapshot"]["services"]}

    wait_for(lambda: "crashy" not in services(), 20, interval=0.1, what="crashy out of the services table")
    assert "tiny-model" in services()


def test_doctor_passes_then_fails_once_the_control_plane_stops(mesh: Mesh) -> None:
    healthy = wait_for(
        lambda: (d := _cli(mesh, "doctor", "--json"))[0] == 0 and d,
        20,
        interval=0.2,
        what="doctor to pass",
    )
    checks = {c["check"]: c["outcome"] for c in json.loads(healthy[1])["checks"]}
    assert checks["control plane"] == checks["clock"] == "pass"
    # "warn" while a deleted Workload's sidecar still runs (and NACKs), "pass" once `up` stopped it
    assert checks["sidecar config"] in ("pass", "warn")
    mesh.cli("down")
    code, out, _ = _cli(mesh, "doctor")
    assert code == 1 and "FAIL  control plane" in out and "fix: " in out
    assert _cli(mesh, "status")[0] == 3
