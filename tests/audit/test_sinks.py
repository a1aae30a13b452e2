"""SIEM sinks: syslog (TCP and TLS, RFC 5424 + RFC 6587 octet counting), JSON-lines file, HTTP.

Each receiver is a real server started by the test; each sink starts while its receiver is
down (or failing), and must deliver every stored record once it is back.
"""

from __future__ import annotations

import json
import re
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from meshward.audit.sinks import SinkThread
from meshward.audit.spool import AuditSpool
from meshward.audit.store import AuditStore
from meshward.resources.mesh import AuditSink
from tests.support.certs import self_signed
from tests.support.proc import free_port, wait_for

pytestmark = pytest.mark.e2e

SOURCE = "spiffe://demo.local/ns/ml/sa/fraud-model"
RFC5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z) (?P<host>\S{1,255}) "
    r"(?P<app>\S{1,48}) (?P<procid>\S{1,128}) (?P<msgid>\S{1,32}) (?P<sd>\[.*?[^\\]\]|-) (?P<msg>.*)$",
    re.S,
)


def _store(state: Path, n: int) -> AuditStore:
    spool = AuditSpool(state / "spool")
    store = AuditStore(state)
    for i in range(n):
        spool.append(
            {
                "class_uid": 4002,
                "class_name": "HTTP Activity",
                "severity_id": 1,
                "time": 1_700_000_000_000 + i,
            }
        )
    batch = spool.read(0, max_records=n)
    assert batch is not None
    store.ingest(SOURCE, batch.body())
    spool.close()
    return store


class _SyslogHandler(socketserver.BaseRequestHandler):
    messages: list[str]

    def handle(self) -> None:
        buf = b""
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            buf += data
            while b" " in buf:
                length_text, _, rest = buf.partition(b" ")
                length = int(length_text)  # octet counting: "<len> <message>"
                if len(rest) < length:
                    break
                type(self).messages.append(rest[:length].decode())
                buf = rest[length:]


def _syslog_server(
    port: int, tls: ssl.SSLContext | None
) -> tuple[socketserver.ThreadingTCPServer, list[str]]:
    messages: list[str] = []
    handler = type("Handler", (_SyslogHandler,), {"messages": messages})

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

        def get_request(self) -> tuple[Any, Any]:
            sock, addr = super().get_request()
            return (tls.wrap_socket(sock, server_side=True) if tls else sock), addr

    server = Server(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, messages


@pytest.fixture
def forwarding(tmp_path: Path) -> Iterator[tuple[AuditStore, SinkThread]]:
    store = _store(tmp_path, 30)
    thread = SinkThread(store, poll_interval=0.05)
    try:
        yield store, thread
    finally:
        thread.close()


def _seqs(messages: list[str]) -> set[int]:
    return {int(m) for m in re.findall(r'seq="(\d+)"', "\n".join(messages))}


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_syslog_receiver_down_then_up_gets_every_record(
    tmp_path: Path, forwarding: tuple[AuditStore, SinkThread], tls: bool
) -> None:
    store, thread = forwarding
    port = free_port()
    server_ctx = None
    sink = AuditSink(name="siem", type="syslog", address=f"127.0.0.1:{port}", batchSize=7)
    if tls:
        cert, key = self_signed(tmp_path, "syslog")
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
        sink = AuditSink(
            name="siem",
            type="syslog",
            address=f"127.0.0.1:{port}",
            tls=True,
            caFile=str(cert),
            serverName="localhost",
        )
    thread.update([sink])
    assert thread.forwarder is not None
    forwarder = thread.forwarder
    wait_for(
        lambda: forwarder.errors["siem"], timeout=10, what="a failed delivery while the receiver is down"
    )
    server, messages = _syslog_server(port, server_ctx)
    try:
        wait_for(
            lambda: _seqs(messages) >= set(range(1, 31)), timeout=20, what="every record at the receiver"
        )
        # Records stored while the sink runs are forwarded too.
        store.record(
            {"class_uid": 6003, "class_name": "API Activity", "severity_id": 3, "time": 1_700_000_001_000}
        )
        wait_for(lambda: any("API_Activity" in m for m in messages), timeout=10, what="a live record")
    finally:
        server.shutdown()
        server.server_close()
    for message in messages:
        m = RFC5424.match(message)
        assert m is not None, message
        assert m["app"] == "meshward" and m["msgid"] in ("HTTP_Activity", "API_Activity")
        assert int(m["pri"]) // 8 == 13  # facility: log audit
        assert m["sd"].startswith("[meshward@32473 ")
        assert json.loads(m["msg"])["class_uid"] in (4002, 6003)
    cursor = json.loads((store.directory / "sinks" / "siem.json").read_text())
    assert sorted(cursor.values()) == [1, 30]  # per-chain cursor on disk: control chain 1, sidecar 30


def test_file_and_http_sinks(tmp_path: Path, forwarding: tuple[AuditStore, SinkThread]) -> None:
    _, thread = forwarding
    received: list[dict[str, Any]] = []
    failures = [3]  # the HTTP endpoint fails its first three batches

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status = 503 if failures[0] > 0 else 200
            if failures[0] > 0:
                failures[0] -= 1
            else:
                received.extend(body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    out = tmp_path / "siem" / "audit.jsonl"
    try:
        thread.update(
            [
                AuditSink(name="file", type="file", path=str(out), batchSize=8),
                AuditSink(name="cef-file", type="file", path=str(out.with_suffix(".cef")), format="cef"),
                AuditSink(
                    name="http",
                    type="http",
                    url=f"http://127.0.0.1:{http.server_address[1]}/ingest",
                    batchSize=10,
                ),
            ]
        )
        wait_for(lambda: len(received) >= 30, timeout=20, what="the HTTP sink to deliver everything")
        wait_for(
            lambda: out.exists() and len(out.read_text().splitlines()) >= 30, timeout=10, what="file sink"
        )
    finally:
        http.shutdown()
        http.server_close()
    assert failures == [0]
    assert sorted(e["unmapped"]["meshward_audit"]["seq"] for e in received) == list(range(1, 31))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["unmapped"]["meshward_audit"]["seq"] for e in lines] == list(range(1, 31))
    cef = out.with_suffix(".cef").read_text().splitlines()
    assert len(cef) == 30 and all(line.startswith("CEF:0|Meshward|") for line in cef)


def test_unreachable_sink_does_not_block_ingest(tmp_path: Path) -> None:
    store = _store(tmp_path, 5)
    thread = SinkThread(store, poll_interval=0.05)
    with socket.socket() as blackhole:  # accepts the TCP connection but never reads
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen()
        thread.update(
            [AuditSink(name="stuck", type="syslog", address=f"127.0.0.1:{blackhole.getsockname()[1]}")]
        )
        try:
            spool = AuditSpool(tmp_path / "spool")
            for i in range(200):
                spool.append({"class_uid": 4002, "time": i})
            batch = spool.read(5, max_records=500)
            assert batch is not None
            assert store.ingest(SOURCE, batch.body()).acked_seq == 205
            spool.close()
        finally:
            thread.close()


def test_control_plane_forwards_to_the_syslog_sink_of_the_mesh_resource(tmp_path: Path) -> None:
    """The real control plane: a Mesh resource names a syslog sink; its own events arrive there."""
    from meshward.cli.main import main
    from tests.support.proc import PYTHON, spawn

    state = tmp_path / "state"
    assert main(["init", "--state", str(state), "--trust-domain", "demo.local"]) == 0
    port = free_port()
    server, messages = _syslog_server(port, None)
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text(
        "apiVersion: meshward.dev/v1alpha1\nkind: Mesh\nmetadata: {name: mesh}\nspec:\n"
        f"  trustDomain: demo.local\n  audit:\n    sinks:\n    - {{name: siem, type: syslog, address: '127.0.0.1:{port}'}}\n"
    )
    control = spawn(
        [PYTHON, "-m", "meshward", "control", "--state", str(state), "--listen", "127.0.0.1:0"],
        tmp_path / "control.log",
    )
    try:
        wait_for(lambda: (state / "control.json").exists(), timeout=30, what="the control plane")
        wait_for(
            lambda: main(["apply", "-f", str(mesh), "--state", str(state)]) == 0, timeout=30, what="apply"
        )
        wait_for(
            lambda: any("ApplyConfig" in m for m in messages), timeout=20, what="the apply event at the SIEM"
        )
    finally:
        control.stop()
        server.shutdown()
        server.server_close()
    for message in messages:
        assert RFC5424.match(message), message
    assert any('"class_uid":6002' in m for m in messages)  # the control plane's start, sent from its cursor
