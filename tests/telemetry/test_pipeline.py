"""The runtime's typed services and the sidecar-owned telemetry pipeline.

The runtime keeps one object per type across config generations; the pipeline behind the
telemetry filter's outputs is started and stopped by the in-process ``Sidecar`` itself: one
shipping path (``Sidecar.ship_audit``), and ``stop()`` writes the stop record and frees the
spool slot for the next process.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from meshward.audit.chain import parse_record_line
from meshward.filters.authz import AuthzCounters, counters
from meshward.filters.base import SidecarRuntime
from meshward.proxy import Sidecar, SidecarOptions, SnapshotRejected
from meshward.proxy.pipeline import TelemetryPipeline
from meshward.telemetry.filter import TelemetryFilter, build
from meshward.telemetry.outputs import TelemetryOutputs, telemetry_outputs
from tests.support.sidecar import issue_svid, make_snapshot


def _runtime(state_dir: Path | None = None) -> SidecarRuntime:
    snapshot = make_snapshot("llm/chat")
    return SidecarRuntime(snapshot.workload, snapshot.trust_domain, state_dir=state_dir)


class _Thing:
    def __init__(self, n: int = 0) -> None:
        self.n = n


def test_a_service_is_made_once_per_type_and_kept() -> None:
    runtime = _runtime()
    first = runtime.service(_Thing, lambda: _Thing(1))
    assert runtime.service(_Thing, lambda: _Thing(2)) is first and first.n == 1
    assert runtime.service(_Thing) is first
    assert counters(runtime) is counters(runtime) and isinstance(counters(runtime), AuthzCounters)
    assert set(counters(runtime)) == {"allowed", "denied", "dry_run_allowed", "dry_run_denied"}


def test_provide_installs_before_first_use_and_refuses_a_second() -> None:
    runtime = _runtime()
    mine = _Thing(7)
    runtime.provide(mine)
    assert runtime.service(_Thing, lambda: _Thing(8)) is mine
    with pytest.raises(RuntimeError, match="already has a _Thing"):
        runtime.provide(_Thing(9))


def test_filters_of_every_generation_write_to_the_one_outputs_object() -> None:
    runtime = _runtime()
    one, two = build(make_snapshot("llm/chat"), runtime), build(make_snapshot("llm/chat"), runtime)
    assert isinstance(one, TelemetryFilter) and isinstance(two, TelemetryFilter)
    assert one.outputs is two.outputs is telemetry_outputs(runtime)
    assert one.outputs.audit_sink is None  # no pipeline: nothing behind the outputs but metrics


def test_the_pipeline_points_the_outputs_at_its_spool_and_lets_go_when_closed(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    pipeline = TelemetryPipeline(runtime)
    outputs: TelemetryOutputs = telemetry_outputs(runtime)
    assert pipeline.spool is not None and outputs.audit_sink == pipeline.audit
    pipeline.configure(make_snapshot("llm/chat", mesh={"telemetry": {"accessLog": "state"}}))
    assert outputs.access_log is not None and pipeline.spool.last_seq == 2  # start, generation
    pipeline.close()
    assert outputs.audit_sink is None and outputs.access_log is None
    outputs.audit({"class_uid": 6003})  # after close: dropped, never raises
    pipeline.close()  # idempotent


def test_the_sidecar_ships_through_one_path_and_its_stop_closes_the_trail(tmp_path: Path) -> None:
    svid = issue_svid(tmp_path / "svid", "llm/chat")
    state = tmp_path / "state"
    batches: list[bytes] = []

    async def post(batch: bytes) -> tuple[int, bytes]:
        batches.append(batch)
        last = json.loads(batch.splitlines()[-1])["seq"]
        return 200, json.dumps({"acked_seq": last}).encode()

    async def main() -> None:
        sidecar = Sidecar(SidecarOptions(state_dir=state))
        sidecar.set_identity(svid.cert.read_bytes(), svid.key.read_bytes(), svid.bundle.read_bytes())
        sidecar.set_snapshot(make_snapshot("llm/chat", mesh={"defaultPolicy": "allow"}))
        await sidecar.start(admin=False)
        try:
            sidecar.ship_audit(post)
            sidecar.ship_audit(post)  # once per process: the second changes nothing
            pipeline = sidecar.pipeline
            assert pipeline is not None and pipeline.spool is not None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while pipeline.spool.pending and loop.time() < deadline:
                await asyncio.sleep(0.02)
            assert pipeline.spool.pending == 0  # start record and generation 1 acknowledged
        finally:
            await sidecar.stop()
        assert sidecar.pipeline is not None and sidecar.pipeline.spool is None

    asyncio.run(main())
    assert batches
    again = TelemetryPipeline(_runtime(state))  # the slot was released: the next process takes it
    assert again.spool is not None and again.spool.directory.name == "spool-0"
    assert again.spool.last_seq == 4  # start, generation 1, stop; then this one's start
    stop = again.spool.read(2, max_records=1)
    assert stop is not None and parse_record_line(stop.lines[0]).event["activity_name"] == "Stop"
    again.close()


def test_a_generation_whose_telemetry_cannot_be_opened_is_refused_and_the_old_one_stays(
    tmp_path: Path,
) -> None:
    svid = issue_svid(tmp_path / "svid", "llm/chat")
    state = tmp_path / "state"
    sidecar = Sidecar(SidecarOptions(state_dir=state))
    sidecar.set_identity(svid.cert.read_bytes(), svid.key.read_bytes(), svid.bundle.read_bytes())
    sidecar.set_snapshot(make_snapshot("llm/chat", mesh={"telemetry": {"accessLog": "off"}}))
    (state / "access.log").mkdir()  # the access log cannot be opened there
    with pytest.raises(SnapshotRejected, match="telemetry: IsADirectoryError"):
        sidecar.set_snapshot(
            make_snapshot("llm/chat", generation=2, mesh={"telemetry": {"accessLog": "state"}})
        )
    assert sidecar.config.generation == 1 and sidecar.stats.config_rejected == 1
    sidecar.set_snapshot(make_snapshot("llm/chat", generation=3, mesh={"telemetry": {"accessLog": "stdout"}}))
    assert sidecar.config.generation == 3
    pipeline = sidecar.pipeline
    assert pipeline is not None and pipeline.outputs.access_log is not None
    asyncio.run(sidecar.stop())
