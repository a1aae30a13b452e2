"""Pure telemetry pieces: traceparent parsing, bounded labels, the collector, the access log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meshward.filters.base import Peer, RequestContext
from meshward.telemetry.accesslog import AccessLog, access_line, access_record
from meshward.telemetry.metrics import DURATION_BUCKETS, BoundedLabel, TelemetryCollector, TelemetryMetrics
from meshward.telemetry.tracing import TraceContext, parse_traceparent

T, S = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        (f"00-{T}-{S}-01", (T, S, "01")),
        (f"00-{T}-{S}-00", (T, S, "00")),
        (f"  00-{T}-{S}-01  ", (T, S, "01")),  # optional whitespace around a header value
        (f"00-{T}-{S}-01-extra", None),  # version 00 has exactly four fields
        (f"01-{T}-{S}-01-extra", (T, S, "01")),  # a future version may add fields
        (f"ff-{T}-{S}-01", None),
        (f"00-{'0' * 32}-{S}-01", None),
        (f"00-{T}-{'0' * 16}-01", None),
        (f"00-{T.upper()}-{S}-01", None),
        (f"00-{T[:-1]}-{S}-01", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_traceparent(header: str | None, parsed: tuple[str, str, str] | None) -> None:
    assert parse_traceparent(header) == parsed


@given(st.text(max_size=80))
def test_parse_traceparent_never_raises(text: str) -> None:
    result = parse_traceparent(text)
    assert result is None or (len(result[0]), len(result[1])) == (32, 16)


def test_trace_context_continues_or_starts() -> None:
    hop = TraceContext.for_request(f"00-{T}-{S}-01")
    assert (hop.trace_id, hop.parent_id) == (T, S) and hop.span_id != S
    assert hop.traceparent == f"00-{T}-{hop.span_id}-01"
    fresh = TraceContext.for_request("garbage")
    assert fresh.parent_id is None and parse_traceparent(fresh.traceparent) == (
        fresh.trace_id,
        fresh.span_id,
        "01",
    )


def test_bounded_label_caps_cardinality() -> None:
    label = BoundedLabel(cap=3)
    assert [label(m) for m in ("a", "b", "a", None, "c", "d", "e")] == [
        "a",
        "b",
        "a",
        "unknown",
        "c",
        "other",
        "other",
    ]
    assert label("x" * 65) == "other" and label("bad label") == "other"


def test_collector_renders_histogram_and_counters() -> None:
    metrics = TelemetryMetrics()
    labels = (
        "destination",
        "webapp",
        "web",
        "td/ns/web/sa/webapp",
        "chat",
        "chat.llm",
        "200",
        "mutual_tls",
        "-",
        "m",
        "chat",
    )
    for seconds in (0.0005, 0.003, 0.003, 1000.0):
        metrics.observe_request(labels, seconds)
    metrics.dlp_findings["email"] += 2
    registry = CollectorRegistry()
    counters = {"allowed": {"llm/allow-web": 3}, "denied": {"-": 1}}
    registry.register(
        TelemetryCollector(metrics, lambda: {"certificate_expiration": 1.7e9}, lambda: counters)
    )
    text = generate_latest(registry).decode()
    assert 'meshward_requests_total{ai_operation="chat"' in text
    assert text.count("meshward_request_duration_seconds_bucket{") == len(DURATION_BUCKETS) + 1
    buckets = {
        s.labels["le"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "meshward_request_duration_seconds_bucket"
    }
    assert (buckets["0.001"], buckets["0.005"], buckets["300.0"], buckets["+Inf"]) == (1, 3, 3, 4)
    assert 'meshward_authz_decisions_total{decision="allowed",policy="llm/allow-web"} 3.0' in text
    assert 'meshward_authz_decisions_total{decision="denied",policy="-"} 1.0' in text
    assert 'meshward_dlp_findings_total{detector="email"} 2.0' in text
    assert "meshward_certificate_expiration_timestamp_seconds 1.7e+09" in text


def _ctx() -> RequestContext:
    ctx = RequestContext(
        request_id="r1",
        direction="inbound",
        peer=Peer("127.0.0.1", 5000, "spiffe://td/ns/web/sa/webapp", "web", "webapp"),
        method="POST",
        path="/v1/chat/completions",
        query="api_key=SECRET",
        host="chat.llm",
        headers={"authorization": "Bearer SECRET"},
        destination_port=8080,
        start=0.0,
    )
    ctx.findings["email"] = 1
    return ctx


def test_access_log_lines_without_secrets(tmp_path: Path) -> None:
    log = AccessLog(tmp_path / "access.log", flush_interval=0.01)
    for i in range(3):
        log.write(access_record(_ctx(), "spiffe://td/ns/llm/sa/chat", "chat.llm", 1_700_000_000.5 + i, 0.25))
    log.close()
    lines = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
    assert len(lines) == 3
    assert lines[0]["time"] == "2023-11-14T22:13:20.500Z" and lines[0]["duration_ms"] == 250.0
    assert lines[0]["dlp_findings"] == {"email": 1} and lines[0]["path"] == "/v1/chat/completions"
    assert "SECRET" not in (tmp_path / "access.log").read_text()
    assert oct((tmp_path / "access.log").stat().st_mode & 0o777) == "0o600"


def test_access_log_drops_instead_of_growing(tmp_path: Path) -> None:
    dropped: list[int] = []
    log = AccessLog(tmp_path / "a.log", flush_interval=60, max_buffered_bytes=1000, on_drop=dropped.append)
    for _ in range(50):
        log.write({"pad": "x" * 100})
    assert 0 < len(dropped) < 50 and log.dropped == len(dropped)
    log.close()
    assert len((tmp_path / "a.log").read_text().splitlines()) == 50 - len(dropped)


@given(
    model=st.one_of(st.none(), st.text(max_size=20)),
    path=st.text(max_size=30),
    request_id=st.text(max_size=20),
    status=st.integers(0, 599),
    findings=st.dictionaries(st.text(max_size=8), st.integers(1, 9), max_size=3),
    tokens=st.tuples(st.integers(0, 10_000), st.integers(0, 10_000), st.booleans()),
    upstream=st.one_of(st.none(), st.floats(0, 100)),
)
def test_fast_access_line_equals_the_record(
    model: str | None,
    path: str,
    request_id: str,
    status: int,
    findings: dict[str, int],
    tokens: tuple[int, int, bool],
    upstream: float | None,
) -> None:
    """The hand-formatted line the sidecar writes is exactly the JSON of :func:`access_record`."""
    ctx = _ctx()
    ctx.ai.model, ctx.path, ctx.request_id, ctx.response_status = model, path, request_id, status
    ctx.findings = findings
    ctx.tokens.input, ctx.tokens.output, ctx.tokens.estimated = tokens
    ctx.upstream_duration = upstream
    dest, svc = "spiffe://td/ns/llm/sa/chat", "chat.llm"
    line = access_line(ctx, json.dumps(dest), json.dumps(svc), 1_700_000_000.25, 0.125)
    assert json.loads(line) == access_record(ctx, dest, svc, 1_700_000_000.25, 0.125)
    assert line.isascii()


def test_workers_sharing_a_state_dir_get_their_own_spool_and_a_restart_resumes(tmp_path: Path) -> None:
    from meshward.filters.base import SidecarRuntime
    from meshward.proxy.pipeline import TelemetryPipeline
    from tests.support.sidecar import make_snapshot

    snapshot = make_snapshot("llm/chat")

    def runtime() -> SidecarRuntime:
        return SidecarRuntime(snapshot.workload, "demo.local", state_dir=tmp_path)

    first, second = TelemetryPipeline(runtime()), TelemetryPipeline(runtime())
    assert first.spool is not None and second.spool is not None
    assert (first.spool.directory.name, second.spool.directory.name) == ("spool-0", "spool-1")
    chain = first.spool.chain
    first.close()  # writes the stop record, releases slot 0
    third = TelemetryPipeline(runtime())
    assert third.spool is not None and third.spool.directory.name == "spool-0"
    assert third.spool.chain == chain and third.spool.last_seq == 3  # start, stop, start
    second.close()
    third.close()


def test_access_log_follows_rotation(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(path, flush_interval=60)
    log.write({"n": 1})
    log.flush()
    path.rename(tmp_path / "access.log.1")  # what logrotate does
    log.write({"n": 2})
    log.flush()
    log.close()
    assert (tmp_path / "access.log.1").read_text() == '{"n":1}\n'
    assert path.read_text() == '{"n":2}\n'
