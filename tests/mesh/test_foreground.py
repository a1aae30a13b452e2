"""``meshward up`` in the foreground: Ctrl-C (SIGINT) stops everything, no process left behind."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.mesh.meshctl import QUICKSTART, Mesh, alive, processes_mentioning
from tests.support.proc import PYTHON, ROOT, spawn, wait_for

pytestmark = pytest.mark.e2e


def test_sigint_stops_the_whole_mesh(tmp_path: Path) -> None:
    mesh = Mesh(tmp_path / "state")
    args = [
        PYTHON,
        "-m",
        "meshward",
        "up",
        "--state",
        str(mesh.state),
        "-f",
        str(QUICKSTART),
        "--control-port",
        "0",
    ]
    up = spawn(args, tmp_path / "up.log", cwd=ROOT)
    try:

        def ready() -> bool:
            if not up.alive():
                raise AssertionError(f"meshward up exited early:\n{up.output()}")
            doc = mesh.status() if (mesh.state / "mesh.json").exists() else {"workloads": []}
            return len(doc["workloads"]) == 2 and all(w["ready"] for w in doc["workloads"])

        wait_for(ready, 60, interval=0.1, what="the quickstart to be ready")
        pids = mesh.pids()
        assert len(pids) == 6  # runner, control, 2 sidecars, 2 apps
        wait_for(lambda: "WORKLOAD" in up.output(), 10, what="the table on the terminal")
        up.popen.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process group
        assert up.popen.wait(30) == 0, up.output()
        assert not [p for p in pids if alive(p)]
        assert processes_mentioning(str(mesh.state)) == []
    finally:
        up.stop()
        mesh.kill_everything()


def test_a_broken_mesh_file_starts_nothing(tmp_path: Path) -> None:
    broken = tmp_path / "mesh.yaml"
    broken.write_text(QUICKSTART.read_text().replace("port: 0", "port: -1", 1))
    done = subprocess.run(
        [PYTHON, "-m", "meshward", "up", "--state", str(tmp_path / "state"), "-f", str(broken), "--detach"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"meshward: {broken}:")
    assert "Workload ml/tiny-model: spec.port: Input should be greater than or equal to 0" in done.stderr
    assert not (tmp_path / "state").exists()


def test_with_strict_an_app_that_cannot_start_is_reported_and_nothing_is_left(tmp_path: Path) -> None:
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(
        "apiVersion: meshward.dev/v1alpha1\nkind: Workload\nmetadata: {name: crashy, namespace: t}\n"
        'spec: {command: ["python", "-c", "print(\'boom\'); raise SystemExit(3)"], readiness: {httpGet: /h}}\n'
    )
    state = tmp_path / "state"
    done = subprocess.run(
        [
            PYTHON,
            "-m",
            "meshward",
            "up",
            "--state",
            str(state),
            "-f",
            str(mesh_file),
            "--detach",
            "--strict",  # without it, the workload fails alone and the mesh runs
            "--control-port",
            "0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "the mesh did not start: app of t/crashy exited (3) before it was ready: boom" in done.stderr
    wait_for(lambda: processes_mentioning(str(state)) == [], 10, what="nothing left running")
