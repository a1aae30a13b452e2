"""LiteLLM's proxy side by side with a Meshward pair: ``.venv/bin/python -m bench.litellm``.

In one run, in front of the same OpenAI-compatible mock model (nginx answering every request
with a fixed ``chat.completion`` that carries ``usage``, so the model costs next to nothing and
the proxies are what is measured):

- ``direct``   wrk → the model;
- ``litellm``  wrk → the LiteLLM proxy (PyPI ``litellm[proxy]``, pinned, in a virtualenv of its
  own that this benchmark makes under ``.bench/`` and keeps between runs; one uvicorn worker,
  its master key required, its defaults otherwise) → the model;
- ``meshward`` wrk → Meshward client sidecar ═mTLS═▶ server sidecar → the model, the server with
  an AuthorizationPolicy, a token budget (RateLimitPolicy) and a DataProtectionPolicy (both
  directions, every built-in detector) and telemetry + audit on.

Every request is the same ``POST /v1/chat/completions`` (a short chat prompt). Throughput: wrk
``-c 8`` for ``DURATION`` s after a warm-up; requests/s per core is the requests served per
CPU-second of the proxy's processes (``/proc``: LiteLLM's whole process group; both Meshward
sidecars, and the server alone). Added p50: wrk's Lua ``delay()`` paces ``RATE_CONNECTIONS``
connections at ``RATE`` requests/s in all (LiteLLM queues from about 20/s on this machine),
minus the same run straight at the model.

If the virtualenv cannot be made (no package index), the area returns ``skipped`` with the reason
and the rest of ``make bench`` goes on.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import QUICK, total_cpu_seconds, workdir
from bench.core import Pair, start_meshward_pair
from bench.proxy import ensure_tools, start_nginx, wrk
from bench.venvs import CACHE, Skip, ensure_venv
from tests.support.proc import Proc, free_port, spawn, wait_for

__all__ = ["LITELLM", "Skip", "ensure_litellm", "group_pids", "run"]

LITELLM = "litellm[proxy]==1.108.7"  # the version the index gave on 2026-12-07; pinned
VENV = CACHE / "litellm-venv"
INSTALL_TIMEOUT = 420
DURATION = 3 if QUICK else 6
CONCURRENCY = 8
WRK_TIMEOUT = 20  # LiteLLM queues: seconds before wrk would count a request as failed
RATE = 10  # requests/s for the latency runs: well under LiteLLM's capacity (it queues from ~20/s)
RATE_CONNECTIONS = 2
RATE_DURATION = 4 if QUICK else 8
GOAL_PER_CORE, GOAL_LATENCY = 20.0, 0.1
PROMPT = "Summarize the mesh policy for the billing service in two sentences."
ANSWER = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "bench",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "The sidecar checks the certificate, then the policy.",
            },
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 14, "completion_tokens": 9, "total_tokens": 23},
}


def ensure_litellm(venv: Path = VENV) -> Path:
    """The ``litellm`` command of a virtualenv with :data:`LITELLM`, made (once) if missing."""
    return ensure_venv(venv, LITELLM, "litellm", INSTALL_TIMEOUT)


def group_pids(pgid: int) -> list[int]:
    """Every process of process group ``pgid`` (LiteLLM may start helpers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def start_litellm(exe: Path, d: Path, model: int, procs: list[Proc]) -> tuple[int, str]:
    """The LiteLLM proxy in front of the model on ``model``; returns its port and master key."""
    port, key = free_port(), f"sk-bench-{secrets.token_hex(16)}"
    config = d / "litellm.yaml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "model_list": [
                    {
                        "model_name": "bench",
                        "litellm_params": {
                            "model": "openai/bench",
                            "api_base": f"http://127.0.0.1:{model}/v1",
                            "api_key": "unused",
                        },
                    }
                ],
                "litellm_settings": {"telemetry": False},
                "general_settings": {"master_key": key},
            }
        )
    )
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"}  # nothing to fetch
    args = [
        str(exe),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    proc = spawn(args, d / "litellm.log", env=env, cwd=d)
    procs.append(proc)

    def state() -> str | None:
        if not proc.alive():
            return "exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=2) as r:
                return "up" if r.status == 200 else None
        except OSError:
            return None

    if wait_for(state, timeout=180, interval=0.5, what="the LiteLLM proxy") == "exited":
        raise RuntimeError(f"the LiteLLM proxy exited at start: {proc.output()[-300:]}")  # not a skip
    return port, key


def meshward_policies() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """authz (the client may chat), a token budget and DLP for the server workload ``nginx``."""
    sel = {"matchLabels": {"app": "nginx"}}
    meta = {"namespace": "bench"}
    return {}, [
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "chat", **meta},
            "spec": {
                "selector": sel,
                "rules": [
                    {
                        "from": [{"source": {"principals": ["bench/client"]}}],
                        "to": [{"operation": {"methods": ["POST"], "paths": ["/v1/chat/completions"]}}],
                    }
                ],
            },
        },
        {
            "apiVersion": "meshward.dev/v1alpha1",
            "kind": "RateLimitPolicy",
            "metadata": {"name": "budget", **meta},
            "spec": {
                "selector": sel,
                "limits": [
                    {
                        "name": "tokens",
                        "key": "source.principal",
                        "tokens": {"limit": 1_000_000_000, "per": "minute"},
                    }
                ],
            },
        },
        {
            "apiVersion": "meshward.dev/v1alpha1",
            "kind": "DataProtectionPolicy",
            "metadata": {"name": "pii", **meta},
            "spec": {"selector": sel, "direction": "both", "action": "mask"},
        },
    ]


def _scripts(d: Path, key: str | None) -> tuple[Path, Path]:
    body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": PROMPT}]})
    lines = [
        'wrk.method = "POST"',
        'wrk.path = "/v1/chat/completions"',
        f"wrk.body = {json.dumps(body)}",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    if key:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {key}"')
    name = "litellm" if key else "plain"
    load, paced = d / f"{name}.lua", d / f"{name}-rate.lua"
    load.write_text("\n".join(lines) + "\n")
    paced.write_text(
        "\n".join(lines) + f"\nfunction delay()\n  return {RATE_CONNECTIONS * 1000 // RATE}\nend\n"
    )
    return load, paced


def measure(port: int, pids: list[list[int]], load: Path, paced: Path) -> dict[str, Any]:
    """Throughput with each process set's CPU, then latency at :data:`RATE` requests/s."""
    wrk(port, CONCURRENCY, 2, load, timeout=WRK_TIMEOUT)  # warm-up
    before = [total_cpu_seconds(p) for p in pids]
    t0 = time.monotonic()
    tp = wrk(port, CONCURRENCY, DURATION, load, timeout=WRK_TIMEOUT)
    wall = time.monotonic() - t0
    cpu = [total_cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
    res: dict[str, Any] = {
        "throughput": tp,
        "rate": wrk(port, RATE_CONNECTIONS, RATE_DURATION, paced, timeout=WRK_TIMEOUT),
    }
    if pids:
        res["cpu_seconds"] = [round(c, 3) for c in cpu]
        res["cores_busy"] = [round(c / wall, 3) for c in cpu]
        res["rps_per_core"] = [round(tp["requests"] / max(c, 1e-9), 1) for c in cpu]
    return res


def run() -> dict[str, Any]:
    try:
        exe = ensure_litellm()
    except Skip as exc:
        return {"skipped": str(exc)}
    ensure_tools()
    res: dict[str, Any] = {"litellm_version": LITELLM}
    with workdir("litellm") as d:
        procs: list[Proc] = []
        pair: Pair | None = None
        try:
            model = start_nginx(d, procs, json.dumps(ANSWER))
            plain, plain_paced = _scripts(d, None)
            res["direct"] = measure(model, [], plain, plain_paced)
            port, key = start_litellm(exe, d, model, procs)
            lload, lpaced = _scripts(d, key)
            pgid = procs[-1].pid
            res["litellm"] = measure(port, [group_pids(pgid)], lload, lpaced)
            res["litellm"]["rss_mb"] = round(_rss(group_pids(pgid)), 1)
            procs.pop().stop(timeout=10)
            pair = start_meshward_pair(d / "mw", model, "llm", policies=meshward_policies())
            both = pair.client_pids + pair.server_pids
            res["meshward"] = measure(pair.port, [both, pair.server_pids], plain, plain_paced)
        finally:
            if pair is not None:
                pair.stop()
            for p in reversed(procs):
                p.stop(timeout=10)
    res["results"] = rows(res)
    res["notes"] = (
        f"{LITELLM} in .bench/litellm-venv; one uvicorn worker, master-key auth, its default logging; "
        "no per-key budgets (they need LiteLLM's Postgres database) and no DLP guardrail (it needs an "
        "external Presidio service), so LiteLLM does less policy work per request than the Meshward "
        "pair, which also pays two processes and an mTLS hop. Mock model: nginx returning a fixed "
        f"chat.completion with usage. wrk -c{CONCURRENCY} for {DURATION} s; added p50 at {RATE} req/s "
        f"({RATE_CONNECTIONS} connections paced by Lua delay()) minus the model alone."
    )
    return res


def _rss(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Headline rows (value, target, met) from ``run``'s figures."""
    ll, mw, direct = res["litellm"], res["meshward"], res["direct"]
    ll_core = ll["rps_per_core"][0]
    mw_pair, mw_server = mw["rps_per_core"]
    ratio = round(mw_pair / ll_core, 1)
    ll_p50 = round(ll["rate"]["p50_ms"] - direct["rate"]["p50_ms"], 3)
    mw_p50 = round(mw["rate"]["p50_ms"] - direct["rate"]["p50_ms"], 3)
    lat = round(mw_p50 / ll_p50, 3) if ll_p50 > 0 else None
    return [
        {
            "name": "LiteLLM requests/s (-c 8)",
            "value": ll["throughput"]["rps"],
            "unit": "req/s",
            "target": None,
            "met": None,
        },
        {
            "name": "Meshward pair requests/s (-c 8)",
            "value": mw["throughput"]["rps"],
            "unit": "req/s",
            "target": None,
            "met": None,
        },
        {
            "name": "LiteLLM requests per CPU-second",
            "value": ll_core,
            "unit": "req/core-s",
            "target": None,
            "met": None,
        },
        {
            "name": "Meshward pair (both sidecars) requests per CPU-second",
            "value": mw_pair,
            "unit": "req/core-s",
            "target": None,
            "met": None,
        },
        {
            "name": "Meshward server sidecar requests per CPU-second",
            "value": mw_server,
            "unit": "req/core-s",
            "target": None,
            "met": None,
        },
        {
            "name": "throughput per core, Meshward pair / LiteLLM",
            "value": ratio,
            "unit": "x",
            "target": f">= {GOAL_PER_CORE:g}",
            "met": ratio >= GOAL_PER_CORE,
        },
        {
            "name": f"added p50 at {RATE} req/s, LiteLLM",
            "value": ll_p50,
            "unit": "ms",
            "target": None,
            "met": None,
        },
        {
            "name": f"added p50 at {RATE} req/s, Meshward pair",
            "value": mw_p50,
            "unit": "ms",
            "target": None,
            "met": None,
        },
        {
            "name": "added p50, Meshward / LiteLLM",
            "value": lat,
            "unit": "x",
            "target": f"<= {GOAL_LATENCY:g}",
            "met": lat is not None and lat <= GOAL_LATENCY,
        },
        {
            "name": "LiteLLM RSS (process group)",
            "value": ll.get("rss_mb"),
            "unit": "MB",
            "target": None,
            "met": None,
        },
    ]


def main() -> None:
    res = run()
    if "--json" in sys.argv:
        print(json.dumps(res, indent=2))
    if "skipped" in res:
        print(f"skipped: {res['skipped']}")
        return
    for row in res["results"]:
        target = f"  (target {row['target']}: {'met' if row['met'] else 'NOT met'})" if row["target"] else ""
        print(f"{row['name']:58} {row['value']!s:>10} {row['unit']}{target}")


if __name__ == "__main__":
    main()
