"""Telemetry through a real sidecar pair: metrics, access log, traceparent, audit spool, OTLP spans.

client (httpx) → client sidecar (outbound) ─mTLS─▶ server sidecar (inbound, filter chain) → app
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshward.audit.chain import parse_record_line
from meshward.audit.spool import AuditSpool
from meshward.config.snapshot import ServiceEntry
from meshward.telemetry.tracing import parse_traceparent
from tests.support.proc import PYTHON, ROOT, Proc, free_port, spawn, wait_for, wait_port
from tests.support.sidecar import (
    MeshPair,
    issue_svid,
    make_snapshot,
    mesh_pair,
    start_sidecar,
    write_bootstrap,
)

pytestmark = pytest.mark.e2e

APP = ROOT / "tests" / "proxy" / "app.py"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


class _OtlpReceiver(BaseHTTPRequestHandler):
    """A minimal OTLP/HTTP traces endpoint: decodes the protobuf and keeps the spans."""

    spans: list[Any] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                type(self).spans.extend(ss.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()


@dataclass
class Setup:
    pair: MeshPair
    state: Path  # the server sidecar's state directory
    otlp: type[_OtlpReceiver]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("telemetry")
    port = free_port()
    app: Proc = spawn([PYTHON, str(APP), str(port)], base / "app.log")
    otlp = ThreadingHTTPServer(("127.0.0.1", 0), _OtlpReceiver)
    threading.Thread(target=otlp.serve_forever, daemon=True).start()
    mp = pytest.MonkeyPatch()
    mp.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{otlp.server_address[1]}/v1/traces")
    mp.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    state = base / "server-state"
    try:
        wait_port(port)
        mesh = {"defaultPolicy": "allow", "audit": {"recordAllowed": True}}
        with _pair(base, port, mesh, {"state_dir": str(state)}) as pair:
            yield Setup(pair, state, _OtlpReceiver)
    finally:
        mp.undo()
        otlp.shutdown()
        app.stop()


@contextlib.contextmanager
def _pair(
    base: Path, app_port: int, mesh: dict[str, Any], server_options: dict[str, Any]
) -> Iterator[MeshPair]:
    """web/webapp → llm/chat like ``mesh_pair``, with a Mesh spec of our own (audit settings)."""
    server_svid = issue_svid(base / "server", "llm/chat")
    client_svid = issue_svid(base / "client", "web/webapp")
    server_snap = make_snapshot("llm/chat", "chat", mesh=mesh)
    boot = write_bootstrap(
        base / "server.json", server_svid, server_snap, app=f"127.0.0.1:{app_port}", options=server_options
    )
    server = start_sidecar(boot, "server")
    try:
        entry = ServiceEntry(
            "chat", "llm", (f"127.0.0.1:{server.inbound_port}",), (server_svid.spiffe_id.uri,)
        )
        client_snap = make_snapshot("web/webapp", services=[entry], mesh=mesh)
        client = start_sidecar(write_bootstrap(base / "client.json", client_svid, client_snap), "client")
        try:
            yield MeshPair(client, server, client_svid.spiffe_id, server_svid.spiffe_id, entry.host, base)
        finally:
            client.stop()
    finally:
        server.stop()


def _access_log(state: Path, n: int) -> list[dict[str, Any]]:
    path = state / "access.log"

    def lines() -> list[str] | None:
        text = path.read_text() if path.exists() else ""
        found = text.splitlines()
        return found if len(found) >= n else None

    return [json.loads(line) for line in wait_for(lines, timeout=10, what=f"{n} access-log lines")]


def test_metrics_access_log_trace_and_audit(setup: Setup) -> None:
    pair, state = setup.pair, setup.state
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    with pair.http_client() as client:
        echo = client.get(
            f"{pair.service_url}/echo/a?api_key=SECRET123", headers={"traceparent": traceparent}
        )
        assert echo.status_code == 200
        for _ in range(2):
            # OIP v2: the model is in the path (an OpenAI body is only read when a policy needs it)
            infer = client.post(f"{pair.service_url}/v2/models/tiny-model/infer", json={"inputs": []})
            assert infer.status_code == 200
        fresh = client.get(f"{pair.service_url}/echo/b")  # no traceparent: one is created
        missing = client.get(f"{pair.service_url}/echo/c?status=404")
        assert missing.status_code == 404

    # -- traceparent: same trace as the client's, the server hop as the new parent ------------
    seen = parse_traceparent(echo.json()["headers"]["traceparent"])
    assert seen is not None
    assert seen[0] == CLIENT_TRACE and seen[1] != CLIENT_SPAN and seen[2] == "01"
    created = parse_traceparent(fresh.json()["headers"]["traceparent"])
    assert created is not None and created[0] != CLIENT_TRACE

    # -- access log: one line per request, with the fields, without the query -----------------
    lines = _access_log(state, 5)
    assert len(lines) == 5
    first = lines[0]
    assert first["path"] == "/echo/a" and "SECRET123" not in json.dumps(lines)
    assert first["trace_id"] == CLIENT_TRACE
    assert first["source"] == pair.client_id.uri and first["destination"] == pair.server_id.uri
    assert first["method"] == "GET" and first["status"] == 200 and first["decision"] == "allow"
    for key in (
        "time",
        "request_id",
        "model",
        "operation",
        "policy",
        "bytes_received",
        "bytes_sent",
        "duration_ms",
        "upstream_duration_ms",
        "tokens",
        "dlp_findings",
        "response_flags",
    ):
        assert key in first
    infers = [line for line in lines if line["path"] == "/v2/models/tiny-model/infer"]
    assert [(c["model"], c["operation"], c["method"]) for c in infers] == [
        ("tiny-model", "infer", "POST")
    ] * 2
    assert lines[3]["trace_id"] == created[0]
    assert lines[4]["status"] == 404
    assert len({line["request_id"] for line in lines}) == 5

    # -- metrics on the admin port ------------------------------------------------------------
    text = httpx.get(f"{pair.server.admin_url}/stats/prometheus", timeout=10).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = [s for s in families["meshward_requests"].samples if s.name == "meshward_requests_total"]
    infer_series = [s for s in requests if s.labels["model"] == "tiny-model"]
    assert len(infer_series) == 1 and infer_series[0].value == 2
    assert infer_series[0].labels == {
        "reporter": "destination",
        "source_workload": "webapp",
        "source_namespace": "web",
        "source_principal": "demo.local/ns/web/sa/webapp",
        "destination_workload": "chat",
        "destination_service": "chat.llm",
        "response_code": "200",
        "connection_security_policy": "mutual_tls",
        "response_flags": "-",
        "model": "tiny-model",
        "ai_operation": "infer",
    }
    assert sum(s.value for s in requests) == 5
    assert {s.labels["response_code"] for s in requests} == {"200", "404"}
    assert "/echo" not in text  # paths are never labels
    duration = families["meshward_request_duration_seconds"].samples
    counts = [s for s in duration if s.name.endswith("_count") and s.labels["model"] == "tiny-model"]
    assert counts[0].value == 2
    assert any(s.name.endswith("_bucket") and s.labels["le"] == "+Inf" for s in duration)
    assert families["meshward_audit_records"].samples[0].value >= 5
    # the SVID's notAfter, as the sidecar loaded it (config_dump shows the same certificate)
    dump = httpx.get(f"{pair.server.admin_url}/config_dump", timeout=10).json()
    not_after = dt.datetime.fromisoformat(dump["identity"]["not_after"]).timestamp()
    expiry = families["meshward_certificate_expiration_timestamp_seconds"].samples
    assert [s.value for s in expiry] == [not_after]
    assert 0 < not_after - time.time() <= 3600 + 60

    # -- the audit spool: lifecycle, config generation, one OCSF record per request -----------
    lines_raw: list[bytes] = []
    for seg in sorted((state / "audit" / "spool-0").glob("seg-*.jsonl")):
        lines_raw += seg.read_bytes().splitlines()
    records = [parse_record_line(line) for line in lines_raw]
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    classes = [r.event["class_uid"] for r in records]
    assert classes[:2] == [6002, 6003] and classes.count(4002) == 5
    http = [r.event for r in records if r.event["class_uid"] == 4002]
    assert http[0]["http_request"]["url"]["path"] == "/echo/a"
    assert http[0]["actor"]["user"]["uid"] == pair.client_id.uri
    assert http[0]["trace"]["uid"] == CLIENT_TRACE
    assert "SECRET123" not in json.dumps(http)

    # -- OTLP: the server hop's span, in the client's trace, parented to the client's span ----
    def span_for_echo() -> Any:
        for span in setup.otlp.spans:
            if span.trace_id.hex() == CLIENT_TRACE:
                return span
        return None

    span = wait_for(span_for_echo, timeout=15, what="the exported span")
    assert span.parent_span_id.hex() == CLIENT_SPAN
    assert span.span_id.hex() == seen[1]  # the id the app saw as its parent


def test_authz_and_limits_counted_and_only_security_relevant_requests_audited(tmp_path: Path) -> None:
    """Defaults (recordAllowed off): an allowed request is logged, not audited; an authz denial
    and a rate-limited request are both; authz counters are exported by policy."""
    allow = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "allow-ok", "namespace": "llm"},
        "spec": {
            "selector": {"matchLabels": {"app": "chat"}},
            "action": "ALLOW",
            "rules": [{"to": [{"operation": {"paths": ["/echo/ok"]}}]}],
        },
    }
    limit = {
        "apiVersion": "meshward.dev/v1alpha1",
        "kind": "RateLimitPolicy",
        "metadata": {"name": "one-per-minute", "namespace": "llm"},
        "spec": {
            "selector": {"matchLabels": {"app": "chat"}},
            "limits": [{"name": "rpm", "key": "source.principal", "requests": {"limit": 1, "per": "minute"}}],
        },
    }
    port = free_port()
    app = spawn([PYTHON, str(APP), str(port)], tmp_path / "app.log")
    state = tmp_path / "server-state"
    try:
        wait_port(port)
        with mesh_pair(tmp_path, port, [allow, limit], server_options={"state_dir": str(state)}) as pair:
            with pair.http_client() as c:
                codes = [c.get(f"{pair.service_url}/echo/{p}").status_code for p in ("ok", "no", "ok")]
            assert codes == [200, 403, 429]
            lines = _access_log(state, 3)
            text = httpx.get(f"{pair.server.admin_url}/stats/prometheus", timeout=10).text
    finally:
        app.stop()
    assert parse_traceparent(f"00-{lines[1]['trace_id']}-{CLIENT_SPAN}-01")  # denied: still traced
    assert [(line["status"], line["decision"], line["response_flags"]) for line in lines] == [
        (200, "allow", "-"),
        (403, "deny", "RBAC"),
        (429, "deny", "RL"),  # authz allowed it; the limit answered
    ]
    assert (lines[0]["policy"], lines[1]["policy"]) == ("llm/allow-ok", None)
    # the 429 names the deciding RateLimitPolicy and its limit, not the ALLOW that let it through
    assert (lines[2]["policy"], lines[2]["rule"]) == ("llm/one-per-minute", "rpm")
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    decisions = {
        (s.labels["policy"], s.labels["decision"]): s.value
        for s in samples
        if s.name == "meshward_authz_decisions_total"
    }
    assert decisions[("llm/allow-ok", "allowed")] == 2 and decisions[("-", "denied")] == 1
    flags = {s.labels["response_flags"]: s.value for s in samples if s.name == "meshward_requests_total"}
    assert flags == {"-": 1, "RBAC": 1, "RL": 1}
    records: list[bytes] = []
    for seg in sorted((state / "audit" / "spool-0").glob("seg-*.jsonl")):
        records += seg.read_bytes().splitlines()
    events = [parse_record_line(r).event for r in records]
    # started, config generation applied, the two refusals, stopped (SIGTERM: a clean exit)
    assert [(e["class_uid"], e["activity_id"]) for e in events] == [
        (6002, 3),
        (6003, 3),
        (4002, 3),
        (4002, 3),
        (6002, 4),
    ]
    denied, limited = events[2], events[3]
    assert denied["http_request"]["url"]["path"] == "/echo/no"
    assert denied["authorizations"][0]["decision"] == "deny" and denial_reason(denied)
    assert limited["unmapped"]["meshward"]["flags"] == "RL"
    assert limited["authorizations"][0]["decision"] == "deny"
    assert limited["authorizations"][0]["policy"] == {"name": "llm/one-per-minute", "uid": "rpm"}
    for e in (denied, limited):
        assert (e["action_id"], e["disposition_id"], e["status_id"]) == (2, 2, 2)
    assert [e["http_response"]["code"] for e in (denied, limited)] == [403, 429]


def denial_reason(event: dict[str, Any]) -> str:
    reason: str = event["authorizations"][0].get("reason", "")
    return reason


def test_sigkilled_sidecar_leaves_no_half_written_record(tmp_path: Path) -> None:
    """kill -9 the server sidecar while it audits every request; its spool reopens whole and chained."""
    port = free_port()
    app = spawn([PYTHON, str(APP), str(port)], tmp_path / "app.log")
    state = tmp_path / "server-state"
    stop = threading.Event()
    answered: list[int] = []

    def traffic(pair: MeshPair) -> None:
        with pair.http_client() as client:
            while not stop.is_set():
                try:
                    answered.append(client.get(f"{pair.service_url}/echo/load").status_code)
                except httpx.HTTPError:
                    answered.append(0)

    try:
        wait_port(port)
        mesh = {"defaultPolicy": "allow", "audit": {"recordAllowed": True}}
        with _pair(tmp_path, port, mesh, {"state_dir": str(state)}) as pair:
            workers = [threading.Thread(target=traffic, args=(pair,)) for _ in range(4)]
            for w in workers:
                w.start()
            try:
                wait_for(lambda: answered.count(200) >= 20, timeout=30, what="traffic")
                pair.server.proc.signal(signal.SIGKILL)
                pair.server.proc.popen.wait(10)
            finally:
                stop.set()
                for w in workers:
                    w.join(30)
    finally:
        app.stop()
    spool = AuditSpool(state / "audit" / "spool-0")  # what the restarted sidecar does first
    lines: list[bytes] = []
    for seg in sorted(spool.directory.glob("seg-*.jsonl")):
        lines += seg.read_bytes().splitlines(keepends=True)
    records = [parse_record_line(line) for line in lines]  # raises on any half record
    assert all(line.endswith(b"\n") for line in lines)
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert all(b.prev == a.hash for a, b in itertools.pairwise(records))
    assert sum(r.event["class_uid"] == 4002 for r in records) >= 20
    assert records[-1].event["class_uid"] == 4002  # no stop record: it was killed
    assert spool.append({"after": "restart"}).seq == len(records) + 1
    spool.close()
