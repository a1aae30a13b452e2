"""Finding 4 and the audit part of 11, against a real control plane over mTLS and a real SIEM
receiver: malformed events are refused at ingest (400), formatters never raise, a record the
receiver refuses is quarantined while the rest flows, the actor of the control plane's records
is the verified certificate, and two sources never share a chain file."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.audit.chain import AuditRecord, ChainWriter, compact_json
from meshward.audit.formats import to_cef, to_ocsf_json, to_syslog
from meshward.audit.sinks import SinkThread
from meshward.audit.store import CONTROL_SOURCE, NEW_CHAINS_PER_MINUTE, AuditStore
from meshward.audit.trail import INDEX_NAME
from meshward.control.client import ControlRefused
from meshward.resources.mesh import AuditSink
from tests.security.controlled_mesh import ControlledMesh, controlled_mesh
from tests.support.proc import wait_for

WEBAPP = "spiffe://demo.local/ns/web/sa/webapp"
BAD_EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("time as text", {"class_uid": 4002, "time": "yesterday"}),
    ("class_uid as text", {"class_uid": "4002"}),
    ("negative class", {"class_uid": -1}),
    ("no class", {"time": 1}),
    ("bool severity", {"class_uid": 4002, "severity_id": True}),
    ("status code as text", {"class_uid": 4002, "http_response": {"code": "200"}}),
    ("endpoint not an object", {"class_uid": 4002, "src_endpoint": "10.0.0.1"}),
    ("authorizations not objects", {"class_uid": 4002, "authorizations": ["allow"]}),
    ("not finite", {"class_uid": 4002, "duration": float("nan")}),
    ("huge int", {"class_uid": 4002, "time": 10**40}),
    ("deep", {"class_uid": 4002, "unmapped": json.loads("[" * 40 + "]" * 40)}),
    (
        "forged API activity",
        {"class_uid": 6003, "actor": {"user": {"uid": "spiffe://demo.local/ns/meshward-system/sa/operator"}}},
    ),
    ("someone else's lifecycle", {"class_uid": 6002, "app": {"uid": "spiffe://demo.local/ns/llm/sa/chat"}}),
    ("too big", {"class_uid": 4002, "message": "x" * 70_000}),
]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlledMesh]:
    with controlled_mesh(tmp_path_factory.mktemp("audit"), "") as m:
        yield m


def _batch(chain: str, events: list[dict[str, Any]], start: int = 0, head: str | None = None) -> bytes:
    writer = ChainWriter(start, head) if head else ChainWriter(start)
    lines = [writer.next_with_line(e)[1] for e in events]
    return compact_json({"chain": chain}).encode() + b"\n" + b"".join(lines)


def _post(mesh: ControlledMesh, svid: Path, body: bytes) -> int:
    with mesh.client_as(svid) as client:
        try:
            return client.request(
                "POST", "/v1/audit", raw=body, headers={"Content-Type": "application/x-ndjson"}
            )[0]
        except ControlRefused as exc:
            return exc.status


def test_malformed_and_forged_events_are_refused_at_ingest(mesh: ControlledMesh) -> None:
    _, svid = mesh.mint("web/webapp")
    for what, event in BAD_EVENTS:
        assert _post(mesh, svid, _batch(secrets.token_hex(8), [event])) == 400, what
    chain = secrets.token_hex(8)
    good = [
        {"class_uid": 4002, "time": 1_700_000_000_000, "http_response": {"code": 200}},
        {"class_uid": 6002, "app": {"name": "meshward-sidecar", "uid": WEBAPP}, "time": 1},
        {
            "class_uid": 6003,
            "actor": {"user": {"uid": WEBAPP}},
            "api": {"operation": "ApplyConfigGeneration"},
        },
        {"class_uid": 0, "time": 2, "unmapped": {"meshward": {"rollout": {"service": "chat"}}}},  # Base Event
    ]
    assert _post(mesh, svid, _batch(chain, good)) == 200
    stored = [c for c in mesh.plane.audit.store.chains() if c.source == WEBAPP]
    assert [(c.chain, c.seq) for c in stored] == [(chain, 4)]


def test_chains_of_lookalike_sources_never_share_a_file_and_the_index_only_grows(
    mesh: ControlledMesh,
) -> None:
    chain = secrets.token_hex(8)  # the same chain id from both: the sender picks it
    trail = mesh.plane.audit.store.trail_dir
    sizes = []
    for identity in ("a_sa_b/c", "a/b_sa_c"):
        _, svid = mesh.mint(identity)
        event = {"class_uid": 4002, "time": 1, "message": identity}
        assert _post(mesh, svid, _batch(chain, [event])) == 200
        sizes.append((trail / INDEX_NAME).read_bytes())
    assert sizes[1].startswith(sizes[0]) and len(sizes[1]) > len(sizes[0])  # appended, never rewritten
    files = {c.source: trail / f"{c.slug}.jsonl" for c in mesh.plane.audit.store.chains() if c.chain == chain}
    assert len(set(files.values())) == 2
    for source, path in files.items():
        (line,) = path.read_text().splitlines()
        assert json.loads(line)["event"]["message"] == source.split("/ns/", 1)[1].replace("/sa/", "/")


def test_a_sender_cannot_open_chains_without_bound(mesh: ControlledMesh) -> None:
    _, svid = mesh.mint("lab/chains")
    event = {"class_uid": 4002, "time": 1}
    statuses = [
        _post(mesh, svid, _batch(secrets.token_hex(8), [event])) for _ in range(NEW_CHAINS_PER_MINUTE + 2)
    ]
    assert statuses[:NEW_CHAINS_PER_MINUTE] == [200] * NEW_CHAINS_PER_MINUTE and statuses[-2:] == [429, 429]


def test_the_actor_of_an_operator_change_is_the_verified_certificate(mesh: ControlledMesh) -> None:
    with mesh.operator() as op:
        op.request(
            "POST",
            "/v1/config/apply",
            {
                "text": "apiVersion: meshward.dev/v1alpha1\nkind: Workload\nmetadata: {name: w, namespace: ns}\nspec: {port: 1}\n"
            },
            headers={"X-Meshward-User": "spiffe://demo.local/ns/meshward-system/sa/control\t"},
        )
    store = mesh.plane.audit.store

    def applied() -> list[AuditRecord]:
        (control,) = [c for c in store.chains() if c.source == CONTROL_SOURCE]
        return [
            r for r in store.read(control.slug, 0) if r.event.get("api", {}).get("operation") == "ApplyConfig"
        ]

    (record,) = wait_for(applied, 10, what="the apply's audit record")
    actor = record.event["actor"]["user"]["uid"]
    assert actor.startswith(mesh.state.operator_id.uri + " (user ") and "\t" not in actor


class _Siem(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        poisoned = any(e.get("message") == "poison" for e in body)
        if not poisoned:
            _Siem.received.extend(body)
        self.send_response(400 if poisoned else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_a_record_the_siem_refuses_is_quarantined_and_the_rest_flows(tmp_path: Path) -> None:
    store = AuditStore(tmp_path)
    events = [
        {"class_uid": 4002, "time": i, "message": "poison" if i == 3 else f"ok {i}"} for i in range(1, 8)
    ]
    writer = ChainWriter()
    store.ingest_records(WEBAPP, "c0ffee00", [writer.next_with_line(e)[1] for e in events])
    siem = ThreadingHTTPServer(("127.0.0.1", 0), _Siem)
    threading.Thread(target=siem.serve_forever, daemon=True).start()
    forwarding = SinkThread(store, poll_interval=0.05)
    try:
        sink = AuditSink(
            name="siem", type="http", url=f"http://127.0.0.1:{siem.server_address[1]}/", batchSize=4
        )
        forwarding.update([sink])
        wait_for(lambda: len(_Siem.received) >= 6, 20, what="every deliverable record")
        assert forwarding.forwarder is not None
        wait_for(lambda: forwarding.forwarder and forwarding.forwarder.quarantined["siem"] == 1, 10)
    finally:
        forwarding.close()
        siem.shutdown()
        siem.server_close()
        store.close()
    assert sorted(e["unmapped"]["meshward_audit"]["seq"] for e in _Siem.received) == [1, 2, 4, 5, 6, 7]
    (line,) = (tmp_path / "audit" / "sinks" / "siem.quarantine.jsonl").read_text().splitlines()
    assert json.loads(line)["seq"] == 3


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
_fields = st.sampled_from(
    [
        "class_uid",
        "time",
        "severity_id",
        "activity_id",
        "action_id",
        "disposition_id",
        "type_uid",
        "metadata",
        "unmapped",
        "authorizations",
        "http_response",
        "src_endpoint",
        "actor",
        "class_name",
        "message",
    ]
)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(_fields | st.text(max_size=8), _json, max_size=10), st.text(max_size=40))
def test_formatters_never_raise_on_any_event(event: dict[str, Any], source: str) -> None:
    record = AuditRecord(1, "0" * 64, "f" * 64, event)
    for fmt in (to_ocsf_json, to_cef, to_syslog):
        assert isinstance(fmt(record, source, "c0ffee00"), str)
