"""CI's short smoke of every fuzz target in fuzz/: a fixed number of inputs each, exit 0."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fuzz.__main__ import discover, run_target

RUNS = 300
TARGETS = discover()


def test_there_are_targets() -> None:
    assert {"fuzz_spiffe", "fuzz_csr", "fuzz_resource_loader", "fuzz_audit_record"} <= {
        p.stem for p in TARGETS
    }


def test_every_target_runs_clean(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:  # each target is its own process
        results = list(pool.map(lambda p: run_target(p, None, RUNS, tmp_path), TARGETS))
    failed = [
        (r.target, r.exit_code, (tmp_path / f"{r.target}.log").read_text()[-2000:])
        for r in results
        if r.crashes
    ]
    if failed:
        pytest.fail(f"fuzz targets crashed: {failed}")
    assert all(r.inputs >= RUNS for r in results), [(r.target, r.inputs) for r in results]
