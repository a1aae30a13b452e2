"""A sidecar's spool shipped to the real control plane, which is down, then up, then restarted."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from meshward.audit.shipper import AuditShipper
from meshward.audit.spool import AuditSpool
from meshward.cli.main import main
from meshward.control.asyncclient import AsyncControlClient
from meshward.identity.state import MeshState
from meshward.tls.contexts import client_context_files
from tests.support.proc import PYTHON, Proc, free_port, spawn
from tests.support.sidecar import issue_svid

pytestmark = pytest.mark.e2e


async def _until(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_control_plane_down_then_back_receives_every_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    assert main(["init", "--state", str(state), "--trust-domain", "demo.local"]) == 0
    svid = issue_svid(tmp_path / "svid", "ml/fraud-model", MeshState(state).load_authority())
    port = free_port()
    url = f"https://127.0.0.1:{port}"

    context = client_context_files(svid.bundle.read_bytes(), svid.cert, svid.key)
    client = AsyncControlClient(url, "demo.local", context, timeout=5)  # the sidecar's one audit path
    spool = AuditSpool(tmp_path / "spool")
    shipper = AuditShipper(spool, client.post_audit, interval=0.05, min_backoff=0.05, max_backoff=0.3)
    control: list[Proc] = []

    def start_control() -> None:
        control.append(
            spawn(
                [PYTHON, "-m", "meshward", "control", "--state", str(state), "--listen", f"127.0.0.1:{port}"],
                tmp_path / f"control-{len(control)}.log",
            )
        )

    async def scenario() -> None:
        task = asyncio.create_task(shipper.run())
        try:
            for i in range(40):  # the control plane does not exist yet
                spool.append({"class_uid": 4002, "time": 1_700_000_000_000 + i, "n": i})
                shipper.notify()
            await _until(lambda: shipper.stats.failures >= 3, 20, "failed deliveries while down")
            assert spool.acked == 0
            start_control()
            await _until(lambda: spool.pending == 0, 30, "the backlog to be acknowledged")
            for i in range(40, 70):  # while it is up
                spool.append({"class_uid": 4002, "time": 1_700_000_000_000 + i, "n": i})
                shipper.notify()
            await _until(lambda: spool.pending == 0, 30, "live records to be acknowledged")
            control[-1].stop()
            failures = shipper.stats.failures
            for i in range(70, 100):  # down again
                spool.append({"class_uid": 4002, "time": 1_700_000_000_000 + i, "n": i})
                shipper.notify()
            await _until(lambda: shipper.stats.failures > failures, 20, "failures while restarted")
            start_control()
            await _until(lambda: spool.pending == 0, 30, "the second backlog")
        finally:
            shipper.stop()
            await asyncio.wait_for(task, 10)

    try:
        asyncio.run(scenario())
    finally:
        for proc in control:
            proc.stop()
        spool.close()

    (trail,) = (state / "audit" / "trail").glob("*ml+sa+fraud-model*.jsonl")
    stored = [json.loads(line) for line in trail.read_text().splitlines()]
    assert [r["event"]["n"] for r in stored] == list(range(100))  # every record, once, in order
    assert main(["audit", "verify", "--state", str(state)]) == 0
    assert "audit trail OK" in capsys.readouterr().out  # + the control plane's own chain
