"""discover, review and policy suggest on a real mesh with scripted traffic.

One mesh (tests/review/mesh.yaml: fraud-model, chat, summarizer, PERMISSIVE, planted policy
problems) is brought up once; callers go through real sidecars with ``meshward run``; the
reports are read from what the control plane recorded (audit trail, ledger, config store).
"""

from __future__ import annotations

import html.parser
import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshward.review.sources import read_audit
from tests.mesh.meshctl import Mesh
from tests.support.proc import PYTHON, ROOT, wait_for

pytestmark = pytest.mark.e2e

MESH_FILE = Path(__file__).with_name("mesh.yaml")
UNTIL = "2100-01-01T00:00:00Z"  # a fixed end of the window: reports are reproducible
SINCE = "400000d"
ROW = [0.1] * 30
INFER = [
    "POST",
    "http://fraud-model.ml/v2/models/fraud/infer",
    {"inputs": [{"name": "input-0", "shape": [1, 30], "datatype": "FP32", "data": ROW}]},
]
FRAUD_METADATA = ["GET", "http://fraud-model.ml/v2/models/fraud", None]
FRAUD_LOAD = ["POST", "http://fraud-model.ml/v2/repository/models/fraud/load", {}]
CHAT = [
    "POST",
    "http://chat.llm/v1/chat/completions",
    {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}]},
]
LIST_MODELS = ["GET", "http://chat.llm/v1/models", None]
SUMMARIZE = [
    "POST",
    "http://summarizer.tools/v1/chat/completions",
    {"messages": [{"role": "user", "content": "x"}]},
]


class ReviewMesh(Mesh):
    def calls(self, identity: str, *calls: list[Any]) -> list[int]:
        done = self.cli(
            "run", "--as", identity, "--", PYTHON, "-m", "tests.review.client", json.dumps(list(calls))
        )
        return list(json.loads(done.stdout.strip().splitlines()[-1]))

    def calls_as_workload(self, name: str, *calls: list[Any]) -> list[int]:
        """Through the outbound listener of a running Workload's sidecar (its identity)."""
        proxy = f"http://{self.workload(name)['outbound']}"
        with httpx.Client(proxy=proxy, trust_env=False, timeout=20) as client:
            return [client.request(method, url, json=body).status_code for method, url, body in calls]

    def report(self, *args: str) -> dict[str, Any]:
        return dict(json.loads(self.cli(*args, "--json", "--since", SINCE, "--until", UNTIL).stdout))

    @cached_property
    def review_text(self) -> str:
        """``review --json`` over the scripted traffic (made once, read by several tests)."""
        return self.cli("review", "--json", "--since", SINCE, "--until", UNTIL).stdout


def _requests(state: Path) -> int:
    return len(read_audit(state)[0])


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReviewMesh]:
    base = tmp_path_factory.mktemp("review")
    m = ReviewMesh(base / "state")
    mesh_file = base / "mesh.yaml"
    mesh_file.write_text(MESH_FILE.read_text().replace("@SINK@", str(base / "siem.jsonl")))
    try:
        m.cli("up", "-f", str(mesh_file), "--detach", "--control-port", "0")
        m.cli("certs", "issue", "--id", "ml/old-batch", "--out", str(base / "old-batch"))  # a stale identity
        scripts = {
            "web/webapp": ([CHAT, CHAT, LIST_MODELS], [200, 200, 200]),
            "lab/intruder": ([INFER, CHAT, SUMMARIZE], [403, 403, 403]),
        }
        with ThreadPoolExecutor(2) as pool:  # two one-off callers at once, each with its own sidecar
            results = {who: pool.submit(m.calls, who, *calls) for who, (calls, _) in scripts.items()}
            for who, (_, expected) in scripts.items():
                assert results[who].result() == expected, who
        assert m.calls_as_workload("preprocessor", INFER, INFER, INFER, FRAUD_METADATA) == [
            200,
            200,
            200,
            200,
        ]
        inbound = m.workload("chat")["inbound"]  # PERMISSIVE: a plaintext caller, no identity
        with httpx.Client(trust_env=False) as plain:
            assert plain.get(f"http://{inbound}/v1/models", timeout=10).status_code == 403
        wait_for(lambda: _requests(m.state) >= 11, 30, interval=0.2, what="11 requests in the audit trail")
        yield m
    finally:
        if (m.state / "mesh" / "run.json").exists():
            m.cli("down", check=False)
        m.kill_everything()


def _service(doc: dict[str, Any], ref: str) -> dict[str, Any]:
    return next(s for s in doc["services"] if f"{s['service']}.{s['namespace']}" == ref)


def _checks(findings: list[dict[str, Any]]) -> set[str]:
    return {f["check"] for f in findings}


def test_discover_lists_every_service_with_its_exposure(mesh: ReviewMesh) -> None:
    doc = mesh.report("discover")
    assert {f"{s['service']}.{s['namespace']}" for s in doc["services"]} == {
        "fraud-model.ml",
        "chat.llm",
        "summarizer.tools",
        "preprocessor.ml",
    }
    fraud = _service(doc, "fraud-model.ml")
    assert fraud["identity"] == "spiffe://demo.local/ns/ml/sa/fraud-model"
    assert fraud["models"] == ["fraud"] and {"infer", "metadata"} <= set(fraud["operations"])
    assert fraud["servesModel"] and fraud["protocols"] == ["oip"]
    callers = {c["identity"]: c for c in fraud["callers"]}
    assert callers["spiffe://demo.local/ns/ml/sa/preprocessor"]["allowed"] == 4
    assert callers["spiffe://demo.local/ns/lab/sa/intruder"]["denied"] == 1
    assert fraud["exposure"]["authorizationPolicies"] == ["ml/fraud-broad", "ml/fraud-infer"]
    chat = _service(doc, "chat.llm")
    assert chat["exposure"]["plaintextRequests"] == 1 and chat["exposure"]["mtls"] == "PERMISSIVE"
    assert chat["exposure"]["dryRunPolicies"] == ["llm/chat-no-listing"]
    assert {"mtls-permissive", "plaintext-seen"} <= _checks(chat["findings"])
    summarizer = _service(doc, "summarizer.tools")
    assert (
        "no-policy" in _checks(summarizer["findings"])
        and summarizer["exposure"]["authorizationPolicies"] == []
    )
    assert all("mtls-permissive" in _checks(s["findings"]) for s in doc["services"])
    for f in doc["findings"]:
        assert {"severity", "subject", "message"} <= set(f)
    assert any(f["subject"] == "summarizer.tools" and f["check"] == "no-policy" for f in doc["findings"])


def test_review_finds_the_planted_problems(mesh: ReviewMesh) -> None:
    doc = json.loads(mesh.review_text)
    assert {(u["policy"], u["rule"]) for u in doc["unusedGrants"]} == {("llm/chat-batch", 0)}
    assert [s["identity"] for s in doc["staleIdentities"]] == ["spiffe://demo.local/ns/ml/sa/old-batch"]
    broad = {(b["policy"], b["field"]): b for b in doc["broadRules"]}
    assert broad[("ml/fraud-broad", "principals")]["seen"] == ["demo.local/ns/ml/sa/preprocessor"]
    assert [(s["policy"], s["shadowedBy"]) for s in doc["shadowedPolicies"]] == [
        ("ml/fraud-infer", "ml/fraud-broad rules[0]")
    ]
    intruder = [d for d in doc["denials"] if d["identity"] == "demo.local/ns/lab/sa/intruder"]
    assert sum(d["requests"] for d in intruder) == 3
    assert {d["service"] for d in intruder} == {"fraud-model.ml", "chat.llm", "summarizer.tools"}
    assert [(d["policy"], d["callers"]) for d in doc["dryRunDenials"]] == [
        ("llm/chat-no-listing", ["demo.local/ns/web/sa/webapp"])
    ]
    assert [u["policy"] for u in doc["unusedDenies"]] == ["llm/chat-no-admin"]
    fraud = next(c for c in doc["compliance"] if c["service"] == "fraud-model.ml")
    llm02 = next(c for c in fraud["controls"] if c["id"] == "LLM02")
    assert llm02["status"] == "missing" and "data_protection" in llm02["missing"]


def test_reports_are_reproducible_and_signed(mesh: ReviewMesh, tmp_path: Path) -> None:
    from meshward.review.signing import SignatureError, public_key, verify_bytes, verify_report

    again = mesh.cli("review", "--json", "--since", SINCE, "--until", UNTIL).stdout
    assert again == mesh.review_text  # same data, same window: the same bytes
    report = tmp_path / "review.json"
    report.write_text(again)
    assert "signature OK" in mesh.cli("review", "--verify", str(report)).stdout
    tampered = json.loads(again)
    tampered["unusedGrants"] = []
    with pytest.raises(SignatureError, match="does not verify"):
        verify_report(tampered, public_key(mesh.state))
    page, sig = tmp_path / "review.html", tmp_path / "review.html.sig"
    mesh.cli(
        "discover",
        "--since",
        SINCE,
        "--until",
        UNTIL,
        "--format",
        "html",
        "--out",
        str(page),
        "--signature",
        str(sig),
    )
    verify_bytes(page.read_bytes(), sig.read_text(), public_key(mesh.state))  # the detached form
    page.write_bytes(page.read_bytes().replace(b"summarizer", b"summarize"))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_bytes(page.read_bytes(), sig.read_text(), public_key(mesh.state))


class _Page(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.headings: list[str] = []
        self.cells: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href")]
        self._in = tag

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "h2":
            self.headings.append(data)
        if self._in == "td":
            self.cells.append(data)


def test_markdown_and_html_reports_and_siem_export(mesh: ReviewMesh) -> None:
    done = mesh.cli("review", "--since", SINCE, "--until", UNTIL, "--format", "md", "--export", "findings")
    markdown = done.stdout
    assert markdown.startswith("# Access review: demo.local")
    assert "## Unused grants" in markdown and "| llm/chat-batch | 0 |" in markdown
    page = _Page()
    page.feed(mesh.cli("discover", "--since", SINCE, "--until", UNTIL, "--format", "html").stdout)
    assert not {"script", "link", "img", "iframe"} & set(page.tags) and page.urls == []
    assert page.headings == ["Services", "Callers", "Findings"]
    assert "summarizer.tools" in page.cells and "PERMISSIVE" in page.cells
    # The findings went to the Mesh's file sink as OCSF Compliance Findings.
    assert "exported" in done.stderr
    records = [json.loads(line) for line in (mesh.state.parent / "siem.jsonl").read_text().splitlines()]
    findings = [r for r in records if r.get("class_uid") == 2003]
    assert any(
        r["finding_info"]["title"] == "unused-grant"
        and r["resources"][0]["name"] == "llm/chat-batch rules[0]"
        for r in findings
    )


def test_suggested_policy_applied_keeps_observed_calls_and_denies_the_rest(mesh: ReviewMesh) -> None:
    suggestion = mesh.cli(
        "policy", "suggest", "--for", "fraud-model.ml", "--replace", "--since", SINCE, "--until", UNTIL
    ).stdout
    assert "/v2/models/{*}/infer" in suggestion and "# Observed requests it would deny:" in suggestion

    def apply(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "meshward", "apply", "--state", str(mesh.state), "-f", "-", *flags],
            input=suggestion,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )

    dry = apply("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "authorizationpolicy ml/fraud-model-least-privilege created (dry run)" in dry.stdout
    applied = apply()
    assert applied.returncode == 0, applied.stderr
    generation = int(applied.stderr.split("generation ")[1].split()[0])
    mesh.wait_generation(generation)
    never_seen = (
        "--from",
        "ml/preprocessor",
        "--method",
        "POST",
        "--path",
        "/v2/repository/models/fraud/load",
    )
    denied = mesh.cli("check", "--to", "fraud-model.ml", *never_seen, check=False)
    assert denied.returncode == 1 and "no ALLOW policy matched" in denied.stdout
    unknown = mesh.cli("policy", "suggest", "--for", "nope.ml", check=False)
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1 and "not a service" in unknown.stderr
    # Through the real sidecars: what was seen still works, what never was is denied.
    assert mesh.calls_as_workload("preprocessor", INFER, FRAUD_METADATA, FRAUD_LOAD) == [200, 200, 403]
