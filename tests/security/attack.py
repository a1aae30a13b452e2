"""Helpers of the data-plane attack tests: a recording app and a raw mTLS client.

The attacker is a mesh workload with a valid SVID (in local mode any process of the user can
read its key) talking straight to the server sidecar's inbound listener, so nothing of its own
sidecar cleans the request first: :func:`raw_request` sends exact bytes over mTLS with the
client workload's SVID. What the app received is read back from the recorder's log
(:class:`Recorder`), so each test shows the forbidden thing never reached the app.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.proc import PYTHON, free_port, spawn, wait_port
from tests.support.sidecar import MeshPair

__all__ = ["Recorder", "Reply", "denials", "raw_request", "recorder"]


@dataclass
class Recorder:
    port: int
    log: Path

    def records(self, marker: str) -> list[dict[str, Any]]:
        """What the app received for requests whose target contains ``marker``."""
        if not self.log.exists():
            return []
        lines = self.log.read_text(encoding="utf-8").splitlines()
        return [r for r in map(json.loads, lines) if marker in r["target"]]


@contextlib.contextmanager
def recorder(directory: Path) -> Iterator[Recorder]:
    port = free_port()
    log = directory / "received.jsonl"
    proc = spawn(
        [PYTHON, "-m", "tests.security.recorder", "--port", str(port), "--log", str(log)],
        directory / "recorder.log",
    )
    try:
        wait_port(port, timeout=30)
        yield Recorder(port, log)
    finally:
        proc.stop()


@dataclass
class Reply:
    status: int
    head: str
    body: bytes


def _client_context(pair: MeshPair) -> ssl.SSLContext:
    svid = pair.directory / "client"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # SPIFFE IDs are URI SANs; the bundle is what is checked
    ctx.load_verify_locations(svid / "bundle.pem")
    ctx.load_cert_chain(svid / "svid.pem", svid / "svid.key")
    return ctx


def raw_request(pair: MeshPair, data: bytes, timeout: float = 20.0) -> Reply:
    """Send ``data`` as is to the server sidecar's inbound over mTLS; read until it closes.

    Send ``Connection: close`` (or one request the sidecar refuses): the reply ends at EOF.
    """
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    with (
        socket.create_connection(pair.server.inbound, timeout=timeout) as sock,
        _client_context(pair).wrap_socket(sock) as tls,
    ):
        tls.sendall(data)
        while time.monotonic() < deadline:
            try:
                piece = tls.recv(65536)
            except (ssl.SSLError, ConnectionResetError):
                break
            if not piece:
                break
            chunks.append(piece)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return Reply(status, head.decode("latin-1"), body)


def denials(pair: MeshPair, policy: str) -> float:
    """How many requests the server sidecar's authz denied under ``policy`` (``ns/name``)."""
    text = httpx.get(f"{pair.server.admin_url}/stats/prometheus", timeout=10, trust_env=False).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        if family.name == "meshward_authz_decisions"
        for s in family.samples
        if s.name.endswith("_total") and s.labels["policy"] == policy and s.labels["decision"] == "denied"
    )
