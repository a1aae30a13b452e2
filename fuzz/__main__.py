"""``make fuzz``: run every coverage-guided fuzz target (``fuzz/fuzz_*.py``) for a set time.

    .venv/bin/python -m fuzz                          # every target, 60 s each
    .venv/bin/python -m fuzz --seconds 600 --only spiffe,csr
    .venv/bin/python -m fuzz --runs 500               # a fixed number of inputs (the CI smoke)

Each target runs as its own process (atheris = libFuzzer for Python) with
``-max_total_time=N`` (or ``-runs=N``), ``-print_final_stats=1``, a corpus kept in
``fuzz/out/corpus/<target>/`` (git-ignored: it grows across runs), the checked-in seeds of
``fuzz/seeds/<target>/`` if there are any, and any crashing input saved as
``fuzz/out/<target>-crash-…``. The executions count comes from libFuzzer's final stats
(``stat::number_of_executed_units``, else the ``#N DONE`` line). The table (target, inputs,
seconds, crashes) is printed and written to ``fuzz/out/results.json``; the exit status is 1 if
any target crashed.

A target file follows one convention: ``TestOneInput(data: bytes)`` raises only on a real bug
(expected refusals, the code's own typed errors, are caught inside) and ``main()`` hands it to
``atheris.Setup`` + ``atheris.Fuzz``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["TargetResult", "discover", "main", "run_target"]

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out"
_EXECUTED = re.compile(rb"stat::number_of_executed_units:\s*(\d+)")
_DONE = re.compile(rb"#(\d+)\s+DONE")
_PROGRESS = re.compile(rb"#(\d+)\s+(?:pulse|NEW|REDUCE|INITED)")


@dataclass
class TargetResult:
    target: str
    inputs: int
    seconds: float
    crashes: int
    exit_code: int
    artifacts: list[str]


def discover(only: set[str] | None = None) -> list[Path]:
    """The target files, by name (``spiffe`` or ``fuzz_spiffe`` both pick ``fuzz_spiffe.py``)."""
    found = sorted(ROOT.glob("fuzz_*.py"))
    if only:
        wanted = {n.removeprefix("fuzz_").removesuffix(".py") for n in only}
        found = [p for p in found if p.stem.removeprefix("fuzz_") in wanted]
    return found


def _executed(output: bytes) -> int:
    for pattern in (_EXECUTED, _DONE, _PROGRESS):
        counts = [int(m) for m in pattern.findall(output)]
        if counts:
            return max(counts)
    return 0


def run_target(path: Path, seconds: float | None, runs: int | None = None, out: Path = OUT) -> TargetResult:
    """Run one target; its corpus and artifacts go under ``out``."""
    name = path.stem
    corpus = out / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    before = set(out.glob(f"{name}-*"))
    seeds = [str(ROOT / "seeds" / name)] if (ROOT / "seeds" / name).is_dir() else []
    flags = ["-print_final_stats=1", f"-artifact_prefix={out}/{name}-", "-timeout=20", "-rss_limit_mb=2048"]
    flags.append(f"-runs={runs}" if runs is not None else f"-max_total_time={max(1, int(seconds or 60))}")
    limit = (seconds or 60) * 2 + 120 if runs is None else 300
    start = time.monotonic()
    try:
        # Targets may import shared helpers from this package (fuzz.dlp_setup, fuzz.http_events).
        path_env = os.pathsep.join(p for p in (str(ROOT.parent), os.environ.get("PYTHONPATH", "")) if p)
        done = subprocess.run(
            [sys.executable, str(path), *flags, str(corpus), *seeds],
            cwd=ROOT.parent,
            capture_output=True,
            timeout=limit,
            env=dict(os.environ, PYTHONPATH=path_env),
        )
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        output, code = (exc.stdout or b"") + (exc.stderr or b""), -9
    elapsed = time.monotonic() - start
    artifacts = sorted(str(p.relative_to(ROOT.parent)) for p in set(out.glob(f"{name}-*")) - before)
    (out / f"{name}.log").write_bytes(output[-200_000:])
    crashes = len(artifacts) or (1 if code != 0 else 0)
    return TargetResult(name, _executed(output), round(elapsed, 1), crashes, code, artifacts)


def _table(results: list[TargetResult]) -> str:
    lines = [f"{'TARGET':<28} {'INPUTS':>12} {'SECONDS':>8} {'CRASHES':>8}"]
    for r in results:
        lines.append(f"{r.target:<28} {r.inputs:>12,} {r.seconds:>8.1f} {r.crashes:>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description="Run the fuzz targets.")
    parser.add_argument("--seconds", type=float, default=60.0, help="time per target (default: %(default)s)")
    parser.add_argument("--runs", type=int, help="a fixed number of inputs per target instead of a time")
    parser.add_argument("--only", action="append", default=[], help="targets to run (comma-separated)")
    args = parser.parse_args(argv)
    only = {n.strip() for spec in args.only for n in spec.split(",") if n.strip()}
    targets = discover(only or None)
    if not targets:
        print(f"fuzz: no target matches {sorted(only)}", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    for path in targets:
        print(f"fuzzing {path.stem} ...", flush=True)
        results.append(run_target(path, args.seconds, args.runs))
    (OUT / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    print(_table(results))
    for r in results:
        if r.crashes:
            print(f"{r.target}: exit {r.exit_code}, see fuzz/out/{r.target}.log {' '.join(r.artifacts)}")
    return 1 if any(r.crashes for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
