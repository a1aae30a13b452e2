"""bench.litellm: it skips with a reason when its virtualenv cannot be made, the runner counts
that as no failure, and its rows compare per-core throughput and added latency to the goals."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

import bench.litellm as ll
from bench.__main__ import _succeeded
from bench.report import AreaRun
from tests.support.proc import spawn, wait_for


def test_an_unmakeable_virtualenv_is_a_skip_with_its_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ll.Skip, match="virtualenv"):
        ll.ensure_litellm(blocker / "venv")


def test_run_returns_skipped_and_the_runner_counts_it_as_no_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_index() -> Path:
        raise ll.Skip("pip install litellm[proxy]==1.108.7 failed (no package index?): ERROR: no network")

    monkeypatch.setattr(ll, "ensure_litellm", no_index)
    result = ll.run()
    assert result == {
        "skipped": "pip install litellm[proxy]==1.108.7 failed (no package index?): ERROR: no network"
    }
    assert _succeeded(AreaRun("litellm", "skipped", "c", result=result, error=result["skipped"]))
    assert not _succeeded(AreaRun("litellm", "skipped", "c", error="the 24-minute budget ran out"))
    assert not _succeeded(AreaRun("litellm", "failed", "c", error="boom"))


def _side(rps: float, per_core: list[float], p50: float) -> dict[str, Any]:
    return {"throughput": {"rps": rps}, "rate": {"p50_ms": p50}, "rps_per_core": per_core, "rss_mb": 300.0}


@pytest.mark.parametrize(
    ("mw_core", "mw_p50", "per_core_met", "latency_met"),
    [(2_000.0, 1.5, True, True), (1_000.0, 1.5, False, True), (2_000.0, 5.0, True, False)],
)
def test_rows_against_the_goals(mw_core: float, mw_p50: float, per_core_met: bool, latency_met: bool) -> None:
    res = {
        "direct": {"rate": {"p50_ms": 1.0}},
        "litellm": _side(40.0, [80.0], 31.0),  # added 30 ms
        "meshward": _side(1_500.0, [mw_core, 3_000.0], mw_p50),
    }
    by_name = {r["name"]: r for r in ll.rows(res)}
    per_core = by_name["throughput per core, Meshward pair / LiteLLM"]
    assert per_core["value"] == mw_core / 80.0 and per_core["met"] is per_core_met
    latency = by_name["added p50, Meshward / LiteLLM"]
    assert (
        latency["value"] == pytest.approx((mw_p50 - 1.0) / 30.0, abs=1e-3) and latency["met"] is latency_met
    )


def test_group_pids_finds_every_process_of_the_group(tmp_path: Path) -> None:
    proc = spawn(["sh", "-c", "sleep 30 & sleep 30 & wait"], tmp_path / "group.log")
    try:

        def three() -> list[int]:
            found = ll.group_pids(proc.pid)
            return found if len(found) >= 3 else []

        pids = wait_for(three, timeout=10)
        assert proc.pid in pids and all(os.getpgid(p) == proc.pid for p in pids)
    finally:
        proc.signal(signal.SIGKILL)
        proc.stop()
