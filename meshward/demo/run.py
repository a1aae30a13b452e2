"""``meshward demo``: bring the demo mesh up, run the scenario, show the table, keep it up.

With ``once`` it stops the mesh after the scenario and returns 0 only if every step held
(1 if one did not, 3 if none failed but some capability is not built yet).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from meshward.demo.cluster import NOT_YET, REPO, MeshCli
from meshward.demo.report import Outcome, StepResult, render_table, summary_line
from meshward.demo.scenario import Scenario
from meshward.mesh.errors import MeshError
from meshward.mesh.polling import wait_until

__all__ = ["MESH_FILE", "exit_code", "prepare_mesh_file", "run_demo"]

MESH_FILE = REPO / "examples" / "demo" / "mesh.yaml"
EXIT_SKIPPED = 3


def prepare_mesh_file(source: Path, target: Path, isolation: str = "none") -> Path:
    """The demo file with ``python`` bound to this interpreter and commands run from the repo
    (and, with ``isolation="netns"``, every workload in its own network namespace)."""
    docs = [d for d in yaml.safe_load_all(source.read_text()) if d]
    for doc in docs:
        spec = doc.get("spec") or {}
        if doc.get("kind") == "Mesh" and isolation != "none":
            spec["isolation"] = isolation
        if doc.get("kind") == "Workload":
            command = spec.get("command") or []
            if command and command[0] in ("python", "python3"):
                command[0] = sys.executable
            spec.setdefault("workdir", str(REPO))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return target


def exit_code(results: list[StepResult]) -> int:
    if any(r.outcome is Outcome.FAIL for r in results):
        return 1
    return EXIT_SKIPPED if any(r.outcome is Outcome.SKIP for r in results) else 0


def _run_step(step: Callable[[], StepResult], n: int, total: int, show: Callable[[str], None]) -> StepResult:
    name = getattr(step, "__name__", "step").replace("_", " ")
    show(f"  [{n}/{total}] {name} …")
    try:
        result = step()
    except Exception as exc:  # a step that breaks is a step that did not hold, never a traceback
        result = StepResult(name, "completes", f"error: {type(exc).__name__}: {exc}", Outcome.FAIL)
    show(f"  [{n}/{total}] {result.label}: {result.title}")
    return result


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait_for_interrupt(message: str) -> None:
    """Wait for Ctrl-C (or SIGTERM); the caller then stops the mesh."""
    print(message, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping …", flush=True)


def _print_results(results: list[StepResult]) -> None:
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    print()
    print(render_table(results, color))
    print(summary_line(results), flush=True)


def _tool(name: str) -> str:
    """How the user types ``name`` from the repository: bare if on PATH, else the venv's path."""
    here = Path(sys.executable).parent / name
    if shutil.which(name) == str(here):
        return name
    try:
        return os.path.relpath(here)
    except ValueError:
        return str(here)


def _all_ready(cli: MeshCli, expected: int) -> dict[str, Any] | None:
    status = cli.status()
    workloads = status.get("workloads") or []
    if len(workloads) >= expected and all(w.get("ready") for w in workloads):
        return status
    return None


def run_demo(state: Path, once: bool, isolation: str = "none") -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # SIGTERM stops the mesh too, like Ctrl-C
    state = state.resolve()
    workdir = state / "demo"
    mesh_file = prepare_mesh_file(MESH_FILE, workdir / "mesh.yaml", isolation)
    cli = MeshCli(state)
    print(f"meshward demo: bringing up {MESH_FILE.relative_to(REPO)} (state in {state}) …", flush=True)
    results: list[StepResult] = []
    up = cli.run("up", "-f", str(mesh_file), "--detach", timeout=180)
    try:
        models = sum(
            1 for d in yaml.safe_load_all(mesh_file.read_text()) if d and d.get("kind") == "Workload"
        )
        status = None
        with contextlib.suppress(MeshError):
            status = wait_until(
                lambda: _all_ready(cli, models), 90, "every workload", interval=0.5, tolerate=NOT_YET
            )
        names = ", ".join(
            f"{w.get('service')}.{w.get('namespace')}" for w in (status or {}).get("workloads", [])
        )
        if up.returncode != 0 or not status:
            why = (up.stderr.strip().splitlines() or ["workloads not ready within 90 s"])[-1]
            results.append(StepResult("bring up the demo mesh", "every workload ready", why, Outcome.FAIL))
            _print_results(results)
            return 1
        generation = (status.get("control") or {}).get("generation")
        results.append(
            StepResult(
                "bring up the demo mesh (control plane, 2 models, their sidecars)",
                "every workload ready",
                f"ready: {names}; generation {generation}",
                Outcome.PASS,
            )
        )
        scenario = Scenario(cli, workdir, status)
        steps = scenario.steps()
        for n, step in enumerate(steps, 2):
            results.append(_run_step(step, n, len(steps) + 1, lambda text: print(text, flush=True)))
        _print_results(results)
        if not once:
            mw, py = _tool("meshward"), _tool("python")
            _wait_for_interrupt(
                "\nThe mesh is up. Explore it from another terminal (in this directory):\n"
                f"  {mw} status --state {state}\n"
                f"  {mw} run --state {state} --as web/webapp -- {py} -m examples.clients.chat --stream 'Hello'\n"
                f"  {mw} run --state {state} --as ml/preprocessor -- {py} -m examples.clients.infer\n"
                f"  {mw} run --state {state} --as lab/intruder -- {py} -m examples.clients.infer\n"
                f"  {mw} audit --state {state} tail\n"
                "Press Ctrl-C to stop it."
            )
        return exit_code(results)
    finally:
        down = cli.run("down", timeout=60)
        if down.returncode != 0:
            print(f"meshward demo: `meshward down` failed: {down.stderr.strip()}", file=sys.stderr)
