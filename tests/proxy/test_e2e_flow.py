"""Flow control and multi-process: a slow reader does not make the sidecars buffer without
bound; several workers share the listeners (SO_REUSEPORT)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.proxy.conftest import RecordingApp
from tests.support.proc import PYTHON, wait_for
from tests.support.sidecar import MeshPair, issue_svid, make_snapshot, start_sidecar, write_bootstrap

pytestmark = pytest.mark.e2e

BIG_MB = 256


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_slow_reader_backpressure_reaches_the_app(pair: MeshPair, app: RecordingApp) -> None:
    """The client reads the head of a 256 MiB response and then nothing: the app must end up
    blocked (it cannot write more than the buffers along the path hold) and the sidecars must
    not have swallowed the body into memory."""
    start = app.big_sent()
    with socket.create_connection(pair.client.outbound, timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(f"GET http://chat.llm/big?mb={BIG_MB} HTTP/1.1\r\nHost: chat.llm\r\n\r\n".encode())
        head = s.recv(4096)
        assert head.startswith(b"HTTP/1.1 200")
        history: list[int] = []

        def stalled() -> bool:
            history.append(app.big_sent() - start)
            time.sleep(0.2)
            return len(history) >= 5 and len(set(history[-5:])) == 1

        wait_for(stalled, timeout=30, interval=0.05, what="the app to be blocked by backpressure")
        sent = history[-1]
        assert sent < BIG_MB * 1024 * 1024 // 4, f"app wrote {sent} bytes: nothing pushed back"
        for sidecar in (pair.client, pair.server):
            assert _rss_mb(sidecar.proc.pid) < 150
    # the client went away: the stream is dropped, the sidecars keep serving
    r = httpx.get(f"{pair.service_url}/after", proxy=pair.proxy_url, timeout=10, trust_env=False)
    assert r.status_code == 200


def test_workers_share_ports_with_reuseport(app: RecordingApp, tmp_path: Path) -> None:
    svid = issue_svid(tmp_path / "svid", "llm/chat")
    boot = write_bootstrap(
        tmp_path / "boot.json",
        svid,
        make_snapshot("llm/chat", mesh={"defaultPolicy": "allow", "mtls": {"mode": "PERMISSIVE"}}),
        app=f"127.0.0.1:{app.port}",
    )
    sidecar = start_sidecar(boot, "workers", workers=2)
    try:
        pids = sidecar.ready["worker_pids"]
        assert sidecar.ready["workers"] == 2 and len(set(pids)) == 2
        port = sidecar.inbound_port
        listening = _listening_inodes(port)
        assert len(listening) >= 2  # one SO_REUSEPORT socket per worker
        for pid in pids:  # ... and each worker holds one of them
            assert listening & _socket_inodes(pid), f"worker {pid} does not listen on {port}"
        # every worker serves (new connection each time: the kernel spreads them)
        for i in range(12):
            r = httpx.get(f"http://127.0.0.1:{port}/w/{i}", timeout=10, trust_env=False)
            assert r.status_code == 200
        assert httpx.get(f"{sidecar.admin_url}/ready", timeout=5).status_code == 200
    finally:
        sidecar.stop()
    wait_for(lambda: all(not Path(f"/proc/{p}").exists() or _zombie(p) for p in pids), timeout=10)


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on ``port`` (from /proc/net/tcp: state 0A = LISTEN)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
            inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[len("socket:[") : -1])
    return out


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_ready_file_and_bootstrap_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"identity": {"cert": "nope.pem", "key": "k", "bundle": "b"}, "snapshot": {}}))
    out = subprocess.run(
        [PYTHON, "-m", "meshward", "proxy", "--bootstrap", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0
    assert out.stderr.startswith("meshward: ") and "Traceback" not in out.stderr
