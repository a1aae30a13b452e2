"""``meshward demo --once`` end to end, and the demo's pure parts (table, time window, mesh file)."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from meshward.demo.report import Outcome, StepResult, render_table, summary_line
from meshward.demo.run import MESH_FILE, exit_code, prepare_mesh_file
from meshward.demo.scenario import Scenario, is_night
from meshward.resources.loader import load_file
from tests.support.proc import PYTHON, ROOT

RESULTS = [
    StepResult("allowed inference", "HTTP 200", "HTTP 200, predictions [1, 1]", Outcome.PASS),
    StepResult("intruder " * 12, "HTTP 403", "HTTP 200", Outcome.FAIL),
    StepResult("audit verify", "exit 0", "not built yet: meshward audit", Outcome.SKIP),
]


def test_table_shows_every_step_and_wraps_within_the_width() -> None:
    text = render_table(RESULTS, color=False, width=100)
    lines = text.splitlines()
    assert all(len(line) <= 100 for line in lines)
    assert len({len(line) for line in lines}) == 1  # every row has the same width
    assert re.search(r"\| 1 +\| allowed inference .*\| PASS +\|", text)
    assert re.search(r"\| 2 +\| intruder .*\| FAIL +\|", text)
    assert "SKIP (not built)" in text and "\x1b[" not in text


def test_table_colors_only_the_result() -> None:
    text = render_table(RESULTS, color=True, width=100)
    assert "\x1b[32mPASS" in text and "\x1b[31mFAIL" in text and "\x1b[33mSKIP" in text


def test_summary_line() -> None:
    assert summary_line(RESULTS) == "1 of 3 steps held; 1 did not; 1 skipped (not built yet)"
    assert summary_line(RESULTS[:1]) == "1 of 1 steps held"


@pytest.mark.parametrize(
    ("hour", "minute", "night"),
    [
        (21, 59, False),
        (22, 0, True),
        (23, 59, True),
        (0, 0, True),
        (5, 59, True),
        (6, 0, False),
        (12, 0, False),
    ],
)
def test_ops_window_is_22_to_06_utc(hour: int, minute: int, night: bool) -> None:
    assert is_night(dt.datetime(2026, 11, 30, hour, minute, tzinfo=dt.UTC)) is night
    berlin = dt.timezone(dt.timedelta(hours=1))
    as_berlin = dt.datetime(2026, 11, 30, hour, minute, tzinfo=dt.UTC).astimezone(berlin)
    assert is_night(as_berlin) is night


def test_demo_mesh_file_loads_and_is_bound_to_this_python(tmp_path: Path) -> None:
    kinds = sorted({r.kind for r in load_file(MESH_FILE)})
    assert kinds == ["AuthorizationPolicy", "DataProtectionPolicy", "Mesh", "RateLimitPolicy", "Workload"]
    prepared = prepare_mesh_file(MESH_FILE, tmp_path / "mesh.yaml")
    workloads = [d for d in yaml.safe_load_all(prepared.read_text()) if d and d["kind"] == "Workload"]
    assert {w["spec"]["command"][0] for w in workloads} == {PYTHON}
    assert {w["spec"]["workdir"] for w in workloads} == {str(ROOT)}
    assert len(load_file(prepared)) == len(load_file(MESH_FILE))


@pytest.mark.e2e
@pytest.mark.timeout(400)
def test_demo_once_holds_every_step(tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = subprocess.run(
        [PYTHON, "-m", "meshward", "demo", "--once", "--state", str(state)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=360,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "HOME": str(tmp_path)},
    )
    out = done.stdout
    log = (state / "demo" / "commands.log").read_text() if (state / "demo" / "commands.log").exists() else ""
    why = f"{out}\n{done.stderr}\n--- commands.log (tail) ---\n{log[-6000:]}"
    rows = re.findall(r"^\| (\d+) +\|.*\| (PASS|FAIL|SKIP \(not built\)) +\|$", out, re.M)
    n = len(Scenario(None, tmp_path, {}).steps()) + 1  # every step, + bringing the mesh up
    assert len(rows) == n, why
    assert [label for _, label in rows] == ["PASS"] * n, why
    assert f"{n} of {n} steps held" in out, why
    assert done.returncode == 0, why
    assert "Traceback" not in done.stderr
    # --once leaves nothing running: the mesh's run record says it stopped
    status = subprocess.run(
        [PYTHON, "-m", "meshward", "status", "--state", str(state), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    after = json.loads(status.stdout)
    assert after["workloads"] == [] and after["control"]["pid"] is None, status.stdout


@pytest.mark.parametrize(
    ("outcomes", "code"),
    [
        ([Outcome.PASS, Outcome.PASS], 0),
        ([Outcome.PASS, Outcome.SKIP], 3),
        ([Outcome.SKIP, Outcome.FAIL], 1),
        ([Outcome.FAIL], 1),
    ],
)
def test_once_exit_code(outcomes: list[Outcome], code: int) -> None:
    assert exit_code([StepResult("s", "e", "o", o) for o in outcomes]) == code
