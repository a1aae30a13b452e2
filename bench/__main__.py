"""``make bench``: run every area's benchmark, then write ``BENCHMARKS.md``.

    .venv/bin/python -m bench                      # every area, then BENCHMARKS.md
    .venv/bin/python -m bench --only proxy,authz   # some areas; the others keep their last result
    .venv/bin/python -m bench --quick              # asks each area for a shorter run
    .venv/bin/python -m bench --list               # which areas exist
    .venv/bin/python -m bench --report-only        # re-render BENCHMARKS.md from stored results

Each area's ``run()`` is called in a child process (a crash or a hang in one area does not take
the others down) with a time limit, within an overall budget of 25 minutes. Its dict is stored
in ``bench/out/<area>.json``; ``BENCHMARKS.md`` is then rendered from every stored result, so a
partial run updates only the areas it ran. An area whose module does not exist yet is reported
as missing, never invented.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from bench.report import AreaRun, Machine, render

__all__ = ["AREAS", "machine_info", "main"]

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
AREAS = (
    "identity",
    "proxy",
    "authz",
    "ratelimit",
    "dlp",
    "telemetry",
    "control",
    "authn",
    "isolation",
    "dashboard",
    "egress",
    "rollout",
    "detection",
    "versus",
)
BUDGET_SECONDS = 24 * 60  # the whole run must stay under 25 minutes (13 areas)
AREA_LIMIT_SECONDS = 5 * 60
RUNNER = ".venv/bin/python -m bench"


def _child(area: str, out: Path) -> int:
    """In the child: import ``bench.<area>``, call ``run()``, store the dict as JSON."""
    module = importlib.import_module(f"bench.{area}")
    result = module.run()
    if not isinstance(result, dict):
        raise TypeError(f"bench.{area}.run() returned {type(result).__name__}, not a dict")
    out.write_text(json.dumps(result, indent=2, default=str))
    return 0


def _first_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def run_area(area: str, limit: float, quick: bool) -> AreaRun:
    command = f".venv/bin/python -m bench.{area}"
    if importlib.util.find_spec(f"bench.{area}") is None:
        return AreaRun(area, "missing", command, error=f"bench/{area}.py does not exist yet")
    OUT.mkdir(parents=True, exist_ok=True)
    partial = OUT / f"{area}.json.partial"
    partial.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if quick:
        env["MESHWARD_BENCH_QUICK"] = "1"
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    print(f"\n=== bench.{area} (limit {limit:.0f} s) ===", flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "--child", area, "--child-out", str(partial)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so a timeout kills the area's whole process group
    )
    try:
        _, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return AreaRun(area, "timeout", command, started, time.monotonic() - t0, error=f"over {limit:.0f} s")
    except BaseException:  # Ctrl-C: the area runs in its own session, so stop it ourselves
        _kill_group(proc)
        raise
    seconds = time.monotonic() - t0
    sys.stderr.write(stderr)
    if proc.returncode != 0 or not partial.exists():
        return AreaRun(
            area, "failed", command, started, seconds, error=_first_line(stderr) or f"exit {proc.returncode}"
        )
    result = json.loads(partial.read_text())
    run = AreaRun(area, "ok", str(result.get("command") or command), started, seconds, result, load=load)
    partial.unlink()
    _store(run)
    return run


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGINT first, so the area's ``finally`` blocks stop the servers it started in their own
    sessions (nginx, HAProxy, sidecars); then SIGTERM and SIGKILL to its process group."""
    for sig, grace in ((signal.SIGINT, 15.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _store(run: AreaRun) -> None:
    record = {
        "name": run.name,
        "status": run.status,
        "command": run.command,
        "started": run.started,
        "seconds": round(run.seconds, 1),
        "result": run.result,
        "error": run.error,
        "load": run.load,
    }
    (OUT / f"{run.name}.json").write_text(json.dumps(record, indent=2, default=str))


def _stored(area: str) -> AreaRun | None:
    path = OUT / f"{area}.json"
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text())
        return AreaRun(
            rec["name"],
            rec["status"],
            rec["command"],
            rec["started"],
            rec["seconds"],
            rec["result"],
            rec["error"],
            rec.get("load"),
        )
    except (ValueError, KeyError):
        return None


def _never_run(area: str) -> AreaRun:
    command = f".venv/bin/python -m bench.{area}"
    if importlib.util.find_spec(f"bench.{area}") is None:
        return AreaRun(area, "missing", command, error=f"bench/{area}.py does not exist yet")
    return AreaRun(area, "not run", command, error="not run yet: `python -m bench --only " + area + "`")


def _tool_version(args: list[str]) -> str | None:
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0][:80] if text else None


def machine_info() -> Machine:
    cpu_model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    tools: dict[str, str] = {}
    for name, args in {
        "HAProxy": ["haproxy", "-v"],
        "nginx": ["nginx", "-v"],
        "wrk": ["wrk", "--version"],
        "OpenSSL": ["openssl", "version"],
    }.items():
        version = _tool_version(args)
        if version:
            tools[name] = version
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return Machine(
        os.cpu_count() or 0, cpu_model, memory, platform.release(), platform.python_version(), tools, load
    )


def _ensure_load_tools() -> None:
    """The end-to-end comparison needs HAProxy, nginx and wrk from Debian; install them if missing.

    If ``bench.proxy`` provides ``ensure_tools()`` it is the one place that knows what it needs,
    and it is called instead.
    """
    if importlib.util.find_spec("bench.proxy") is None:
        return
    proxy = importlib.import_module("bench.proxy")
    ensure = getattr(proxy, "ensure_tools", None)
    if callable(ensure):
        ensure()
        return
    missing = [pkg for pkg in ("haproxy", "nginx", "wrk") if shutil.which(pkg) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"bench: {', '.join(missing)} missing and cannot be installed here (needs root and apt-get)")
        return
    print(f"bench: installing {', '.join(missing)} from Debian", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], env=env, check=False, timeout=300)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        env=env,
        check=False,
        timeout=600,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run Meshward's benchmarks.")
    parser.add_argument(
        "--only", action="append", default=[], help="areas to run (comma-separated, repeatable)"
    )
    parser.add_argument("--quick", action="store_true", help="ask each area for a shorter run")
    parser.add_argument("--list", action="store_true", help="list the areas and whether each exists")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "BENCHMARKS.md", help="where to write the report"
    )
    parser.add_argument("--report-only", action="store_true", help="re-render the report from stored results")
    parser.add_argument("--no-install", action="store_true", help="do not install haproxy, nginx, wrk")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        try:
            return _child(args.child, args.child_out)
        except Exception:
            traceback.print_exc()
            return 1
    if args.list:
        for area in AREAS:
            exists = importlib.util.find_spec(f"bench.{area}") is not None
            print(f"{area:10} {'present' if exists else 'missing'}")
        return 0

    chosen = [a.strip() for spec in args.only for a in spec.split(",") if a.strip()] or list(AREAS)
    unknown = [a for a in chosen if a not in AREAS]
    if unknown:
        print(f"bench: unknown area(s) {', '.join(unknown)}; known: {', '.join(AREAS)}", file=sys.stderr)
        return 2
    if args.report_only:
        chosen = []
    if not args.no_install and "proxy" in chosen:
        _ensure_load_tools()

    machine = machine_info()  # before the runs: the load average says how busy the machine was
    if args.report_only:
        machine.load = ""  # nothing runs now; each area's section has the load of its own run
    deadline = time.monotonic() + BUDGET_SECONDS
    fresh: dict[str, AreaRun] = {}
    for area in chosen:
        left = deadline - time.monotonic()
        if left < 20:
            fresh[area] = AreaRun(
                area, "skipped", f".venv/bin/python -m bench.{area}", error="the 15-minute budget ran out"
            )
            continue
        fresh[area] = run_area(area, min(AREA_LIMIT_SECONDS, left), args.quick)
        if fresh[area].status != "ok" and fresh[area].status != "missing":
            _store(fresh[area])

    runs = [fresh.get(a) or _stored(a) or _never_run(a) for a in AREAS]
    command = RUNNER + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    report = render(machine, runs, generated, command.strip())
    records = ROOT / "bench" / "records.md"  # figures of runs longer than an area may take
    if records.exists():
        report = report.rstrip("\n") + "\n\n" + records.read_text()
    args.output.write_text(report)
    print(f"\nbench: wrote {args.output}")
    for run in runs:
        print(f"  {run.name:10} {run.status:8} {run.error}")
    return 0 if all(fresh[a].status in ("ok", "missing") for a in chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
