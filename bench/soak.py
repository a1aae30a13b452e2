"""Soak: a real mesh under steady mixed load for minutes: ``.venv/bin/python -m bench.soak``.

``meshward up --detach`` runs a control plane, the chat model (OpenAI-style, ``--echo``) and
the fraud model (Open Inference Protocol v2), each behind its sidecar; the load generator runs
under ``meshward run --as web/webapp`` (its own sidecar) and cycles through, at a steady rate:

- a streamed chat completion (SSE, must end with ``[DONE]``), expected 200;
- a chat completion whose prompt holds an e-mail address (a DLP finding; masked), expected 200;
- a fraud-model inference, expected 200;
- a chat with a model no policy allows, expected 403 (a denial);
- a fraud-model admin call (``/v2/repository/index``), expected 403 (a denial).

A request is *failed* when its status differs from the expected one, the stream is cut, or it
raises. Every ``SAMPLE_SECONDS`` the RSS and open file descriptors of each mesh process (control
plane, sidecars, the runner) are read from ``/proc``. Goals: 0 failed requests, RSS growth under
5 % between the end of warm-up (the first 20 % of the run, at least 60 s) and the end, no fd
growth (the most frequent count of open fds in the first third after warm-up against that of the
last third: one sample may catch a connection being opened or a pooled one closed; a leak moves
the steady count). ``fds_max`` is reported too.

Length: ``--minutes N`` or ``MESHWARD_SOAK_MINUTES`` (default 10; document runs of 1 h with
``--minutes 60``). Not among ``bench``'s default areas (it outlasts their 5-minute limit); the
result is written to ``bench/out/soak.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

__all__ = ["run"]

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
SAMPLE_SECONDS = 10.0
RATE_PER_SECOND = 10.0
RSS_GROWTH_TARGET = 5.0

MESH = textwrap.dedent(
    """\
    apiVersion: meshward.dev/v1alpha1
    kind: Mesh
    metadata: {name: soak}
    spec: {trustDomain: demo.local, mtls: {mode: STRICT}, defaultPolicy: deny}
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: chat, namespace: llm, labels: {app: chat}}
    spec:
      port: 0
      command: ["python", "-m", "examples.models.chat", "--port", "{port}", "--echo"]
      readiness: {httpGet: /health}
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: Workload
    metadata: {name: fraud-model, namespace: ml, labels: {app: fraud-model}}
    spec:
      port: 0
      command: ["python", "-m", "examples.models.fraud", "--port", "{port}"]
      readiness: {httpGet: /v2/health/ready}
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: AuthorizationPolicy
    metadata: {name: webapp-chat, namespace: llm}
    spec:
      selector: {matchLabels: {app: chat}}
      action: ALLOW
      rules:
      - from: [{source: {principals: ["demo.local/ns/web/sa/webapp"]}}]
        to: [{operation: {models: [tiny-chat], aiOperations: [chat]}}]
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: AuthorizationPolicy
    metadata: {name: webapp-infer, namespace: ml}
    spec:
      selector: {matchLabels: {app: fraud-model}}
      action: ALLOW
      rules:
      - from: [{source: {principals: ["demo.local/ns/web/sa/webapp"]}}]
        to: [{operation: {models: [fraud], aiOperations: [infer]}}]
    ---
    apiVersion: meshward.dev/v1alpha1
    kind: DataProtectionPolicy
    metadata: {name: pii, namespace: llm}
    spec:
      selector: {matchLabels: {app: chat}}
      direction: both
      detectors: [email, credit_card]
      action: mask
    """
)


# -- the load generator (runs under `meshward run --as web/webapp`) ------------------------------


def _client(seconds: float, out: Path) -> int:
    import httpx

    rows = [[float(i % 7) + 0.5 for i in range(30)]]
    tensor = {"name": "input-0", "shape": [1, 30], "datatype": "FP32", "data": rows}
    chat = "http://chat.llm/v1/chat/completions"
    infer = "http://fraud-model.ml/v2/models/fraud/infer"

    def msg(text: str, model: str = "tiny-chat", stream: bool = False) -> dict[str, Any]:
        return {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}

    kinds = ("chat_stream", "chat_dlp", "infer", "deny_model", "deny_admin")
    counts = {k: {"ok": 0, "failed": 0} for k in kinds}
    errors: list[str] = []
    with httpx.Client(timeout=30, trust_env=True) as http:

        def once(kind: str) -> bool:
            if kind == "chat_stream":
                with http.stream("POST", chat, json=msg("tell me a story", stream=True)) as resp:
                    text = b"".join(resp.iter_bytes())
                return resp.status_code == 200 and b"[DONE]" in text
            if kind == "chat_dlp":
                resp = http.post(chat, json=msg("mail me at alice.smith@example.org please"))
                return resp.status_code == 200 and "alice.smith@example.org" not in resp.text
            if kind == "infer":
                return http.post(infer, json={"id": "soak", "inputs": [tensor]}).status_code == 200
            if kind == "deny_model":
                return http.post(chat, json=msg("hi", model="forbidden-model")).status_code == 403
            return http.post("http://fraud-model.ml/v2/repository/index", json={}).status_code == 403

        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            kind = kinds[n % len(kinds)]
            try:
                ok = once(kind)
            except httpx.HTTPError as exc:
                ok = False
                errors.append(f"{kind}: {type(exc).__name__}: {exc}"[:200])
            counts[kind]["ok" if ok else "failed"] += 1
            n += 1
            pause = start + n / RATE_PER_SECOND - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    out.write_text(json.dumps({"counts": counts, "errors": errors[:20], "seconds": seconds}))
    return 0


# -- the orchestrator ---------------------------------------------------------------------------


def _cli(state: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MESHWARD_STATE", None)
    return subprocess.run(
        [sys.executable, "-m", "meshward", args[0], "--state", str(state), *args[1:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _label(cmdline: str) -> str:
    parts = cmdline.split()
    if "meshward.control" in parts:
        return "control plane"
    if "--id" in parts:
        return "sidecar " + parts[parts.index("--id") + 1]
    if "control" in parts:
        return "control plane"
    if "up" in parts:
        return "up (supervisor)"
    if "run" in parts:
        return "run"
    return parts[2] if len(parts) > 2 else cmdline[:40]


def _mesh_processes(state: Path) -> dict[int, str]:
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(state) in cmdline and "meshward" in cmdline and "bench.soak" not in cmdline:
            found[int(entry.name)] = _label(cmdline)
    return found


def _sample(pid: int) -> tuple[int, int] | None:
    """(RSS kB, open fds) of ``pid``, or None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return rss, fds


def run(minutes: float | None = None) -> dict[str, Any]:
    minutes = minutes if minutes is not None else float(os.environ.get("MESHWARD_SOAK_MINUTES", "10"))
    seconds = minutes * 60
    warmup = max(60.0, seconds * 0.2) if seconds >= 120 else seconds * 0.2
    with tempfile.TemporaryDirectory(prefix="meshward-soak-") as tmp:
        state, mesh_file, client_out = Path(tmp) / "state", Path(tmp) / "mesh.yaml", Path(tmp) / "client.json"
        mesh_file.write_text(MESH)
        up = _cli(state, "up", "-f", str(mesh_file), "--detach", "--control-port", "0")
        if up.returncode != 0:
            raise RuntimeError(f"meshward up failed: {up.stderr[-800:]}")
        client = None
        try:
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            env.pop("MESHWARD_STATE", None)
            client = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "meshward",
                    "run",
                    "--state",
                    str(state),
                    "--as",
                    "web/webapp",
                    "--",
                    sys.executable,
                    "-m",
                    "bench.soak",
                    "--client",
                    "--seconds",
                    str(seconds),
                    "--out",
                    str(client_out),
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            samples: dict[str, list[tuple[float, int, int]]] = {}
            t0 = time.monotonic()
            while client.poll() is None and time.monotonic() - t0 < seconds + 120:
                now = time.monotonic() - t0
                for pid, label in _mesh_processes(state).items():
                    got = _sample(pid)
                    if got is not None:
                        samples.setdefault(f"{label} [{pid}]", []).append((round(now, 1), *got))
                time.sleep(SAMPLE_SECONDS)
            if client.poll() is None:
                client.kill()
            stderr = client.communicate(timeout=30)[1]
        finally:
            if client is not None and client.poll() is None:
                client.kill()
            _cli(state, "down", timeout=120)
        if not client_out.exists():
            raise RuntimeError(f"the load generator wrote no result: {stderr[-800:] if client else ''}")
        load = json.loads(client_out.read_text())
    return _summarize(load, samples, seconds, warmup)


def _summarize(
    load: dict[str, Any], samples: dict[str, list[tuple[float, int, int]]], seconds: float, warmup: float
) -> dict[str, Any]:
    processes = []
    for name, series in sorted(samples.items()):
        after = [s for s in series if s[0] >= warmup] or series[-1:]
        base, last = after[0], series[-1]
        growth = 100.0 * (last[1] - base[1]) / base[1] if base[1] else 0.0
        # fds: a sample may catch a connection being opened or a pooled one closed; a leak moves
        # the steady count: compare the most frequent count of the first and of the last third
        third = max(1, len(after) // 3)
        fds_start = min(statistics.multimode(s[2] for s in after[:third]))
        fds_end = min(statistics.multimode(s[2] for s in after[-third:]))
        processes.append(
            {
                "process": name,
                "samples": len(series),
                "rss_kb_start": series[0][1],
                "rss_kb_after_warmup": base[1],
                "rss_kb_end": last[1],
                "rss_growth_pct": round(growth, 2),
                "fds_after_warmup": fds_start,
                "fds_end": fds_end,
                "fds_max": max(s[2] for s in series),
                "series": [list(s) for s in series],
            }
        )
    requests = sum(c["ok"] + c["failed"] for c in load["counts"].values())
    failed = sum(c["failed"] for c in load["counts"].values())
    worst = max((p["rss_growth_pct"] for p in processes), default=0.0)
    fd_growth = max((p["fds_end"] - p["fds_after_warmup"] for p in processes), default=0)
    rows = [
        {"name": "failed requests", "value": failed, "unit": "requests", "target": "0", "met": failed == 0},
        {
            "name": "worst RSS growth after warm-up",
            "value": worst,
            "unit": "%",
            "target": f"< {RSS_GROWTH_TARGET}",
            "met": worst < RSS_GROWTH_TARGET,
        },
        {
            "name": "worst fd growth after warm-up",
            "value": fd_growth,
            "unit": "fds",
            "target": "0",
            "met": fd_growth <= 0,
        },
    ]
    return {
        "rows": rows,
        "minutes": round(seconds / 60, 2),
        "warmup_seconds": warmup,
        "requests": requests,
        "requests_per_second": round(requests / seconds, 2) if seconds else 0,
        "failed": failed,
        "by_kind": load["counts"],
        "errors": load["errors"],
        "processes": processes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description="Soak a real mesh.")
    parser.add_argument("--minutes", type=float, default=None, help="default: $MESHWARD_SOAK_MINUTES or 10")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=60.0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        assert args.out is not None
        return _client(args.seconds, args.out)
    result = run(args.minutes)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "soak.json").write_text(json.dumps(result, indent=2))
    for row in result["rows"]:
        print(
            f"{row['name']:<34} {row['value']:>10} {row['unit']:<9} target {row['target']:<6} {'met' if row['met'] else 'NOT met'}"
        )
    print(
        f"{result['requests']} requests in {result['minutes']} min ({result['requests_per_second']}/s): {result['by_kind']}"
    )
    for p in result["processes"]:
        print(
            f"  {p['process']:<40} RSS {p['rss_kb_after_warmup']:>7} -> {p['rss_kb_end']:>7} kB "
            f"({p['rss_growth_pct']:+.2f} %), fds {p['fds_after_warmup']} -> {p['fds_end']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
