"""The benchmark report: flattening, target detection, and the runner's handling of missing areas."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.__main__ import AREAS
from bench.report import AreaRun, Machine, flatten, met_flags, render, targets
from tests.support.proc import PYTHON, ROOT

MACHINE = Machine(2, "Test CPU", "1.0 GiB", "6.0", "3.11.7", {"wrk": "wrk 4.1"})


@pytest.mark.parametrize(
    ("value", "rows"),
    [
        ({"a": 1}, [("a", 1)]),
        ({"a": {"b": 2, "c": {"d": 3}}}, [("a.b", 2), ("a.c.d", 3)]),
        ({"xs": [1, 2]}, [("xs", [1, 2])]),
        (
            {"rows": [{"name": "p50", "v": 1}, {"v": 2}]},
            [("rows[p50].name", "p50"), ("rows[p50].v", 1), ("rows[1].v", 2)],
        ),
        ({}, []),
    ],
)
def test_flatten(value: dict[str, object], rows: list[tuple[str, object]]) -> None:
    assert list(flatten(value)) == rows


def test_met_flags_find_only_target_booleans() -> None:
    result = {
        "meets_target": True,
        "p50": {"met": False, "value": 3},
        "throughput_met": True,
        "cache_ok": False,
        "streaming": True,  # a boolean, but not about a target
        "metric_count": 3,
    }
    assert sorted(met_flags(result)) == [
        ("cache_ok", False),
        ("meets_target", True),
        ("p50.met", False),
        ("throughput_met", True),
    ]


def test_render_has_machine_summary_results_and_ratios() -> None:
    runs = [
        AreaRun(
            "authz",
            "ok",
            ".venv/bin/python -m bench.authz",
            "2026-11-30 09:00 UTC",
            6.0,
            {"median_us": 4.2, "meets_target": True, "ratio_vs_none": 0.93},
        ),
        AreaRun(
            "proxy",
            "ok",
            ".venv/bin/python -m bench.proxy",
            "2026-11-30 09:01 UTC",
            80.0,
            {
                "results": [
                    {
                        "name": "rps",
                        "value": 1200.0,
                        "unit": "req/s",
                        "target": ">= 0.6 x haproxy",
                        "met": False,
                    }
                ]
            },
        ),
        AreaRun("dlp", "missing", ".venv/bin/python -m bench.dlp", error="bench/dlp.py does not exist yet"),
        AreaRun(
            "control",
            "failed",
            ".venv/bin/python -m bench.control",
            "2026-11-30 09:02 UTC",
            1.0,
            error="boom | bad",
        ),
    ]
    text = render(MACHINE, runs, "2026-11-30 09:03 UTC", ".venv/bin/python -m bench")
    assert "| CPU model | Test CPU |" in text and "| wrk | wrk 4.1 |" in text
    assert "| authz | ok | 1 of 1 met | 6 s |" in text
    assert "| proxy | ok | 0 of 1 met | 80 s |" in text
    assert "| dlp | missing | — | — |" in text
    assert "| rps | 1,200 | req/s | >= 0.6 x haproxy | **not met** |" in text
    assert "Ratios: `ratio_vs_none` = 0.93" in text
    assert "**failed**: boom \\| bad" in text


def test_runner_renders_every_area_from_stored_results(tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    done = subprocess.run(
        [PYTHON, "-m", "bench", "--report-only", "--output", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "## Machine" in text and "| CPUs (nproc) |" in text
    for area in AREAS:
        assert f"\n| {area} | " in text and f"\n## {area}\n" in text
        assert (ROOT / "bench" / f"{area}.py").exists()  # every area has its module ...
        assert f"\n| {area} | missing |" not in text  # ... so none is reported missing


def test_runner_refuses_an_unknown_area(tmp_path: Path) -> None:
    done = subprocess.run(
        [PYTHON, "-m", "bench", "--only", "nope", "--output", str(tmp_path / "B.md")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "unknown area" in done.stderr
    assert not (tmp_path / "B.md").exists()


def test_targets_table_lists_result_rows_and_flat_flags() -> None:
    runs = [
        AreaRun(
            "a",
            "ok",
            "c",
            result={"results": [{"name": "p50", "value": 0.5, "unit": "ms", "target": "< 1", "met": True}]},
        ),
        AreaRun("b", "ok", "c", result={"median_us": 12.0, "meets_target": False}),
        AreaRun("c", "missing", "c"),
    ]
    assert targets(runs) == [
        ["a", "p50", "0.5 ms", "< 1", "**met**"],
        ["b", "`meets_target`", "—", "see the section", "**not met**"],
    ]
