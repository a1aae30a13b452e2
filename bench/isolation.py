"""Transparent interception vs the ``HTTP_PROXY`` path: ``.venv/bin/python -m bench.isolation``.

One mesh in ``isolation: netns`` (needs root): nginx as the server workload, a client workload
whose namespace wrk runs in, as the client app's user. Side by side, same sidecars, same run:

- ``http_proxy``   wrk → the client sidecar's outbound listener (127.0.0.1:15001, the request
  names the service in its Host header, as an app honouring HTTP_PROXY does);
- ``transparent``  wrk → ``http://nginx.bench/`` (the service's address from the namespace's
  hosts file, port 80): iptables redirects the connection to the same listener, which reads
  the original destination.

Both then go ═mTLS═▶ the server sidecar → nginx. Goal: transparent within 10 % of HTTP_PROXY.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from bench.common import QUICK
from bench.proxy import BODY, _ms, ensure_tools

DURATION = 3 if QUICK else 5
CONCURRENCY = 32

NGINX_CONF = """
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
  default_type application/json;
  server {{ listen 127.0.0.1:@PORT@; location / {{ return 200 '{body}'; }} }}
}}
"""


def _mesh(d: Path) -> str:
    (d / "nginx").mkdir()
    (d / "nginx").chmod(0o777)  # nginx runs as the workload's own user
    conf = NGINX_CONF.format(d=d / "nginx", body=BODY.strip())
    (d / "nginx" / "nginx.conf.in").write_text(conf)
    return textwrap.dedent(
        f"""\
        apiVersion: meshward.dev/v1alpha1
        kind: Mesh
        metadata: {{name: bench}}
        spec: {{trustDomain: demo.local, isolation: netns, defaultPolicy: allow}}
        ---
        apiVersion: meshward.dev/v1alpha1
        kind: Workload
        metadata: {{name: nginx, namespace: bench, labels: {{app: nginx}}}}
        spec:
          isolation: netns
          command: ["sh", "-c", "sed s/@PORT@/{{port}}/ {d}/nginx/nginx.conf.in > {d}/nginx/nginx.conf && exec nginx -p {d}/nginx -c {d}/nginx/nginx.conf -g 'daemon off;'"]
        ---
        apiVersion: meshward.dev/v1alpha1
        kind: Workload
        metadata: {{name: client, namespace: bench, labels: {{app: client}}}}
        spec:
          command: ["python", "-m", "http.server", "--bind", "127.0.0.1", "{{port}}"]
        """
    )


def _wrk_in(netns: str, uid: int, url: str, host: str | None) -> dict[str, float]:
    args = [
        "ip",
        "netns",
        "exec",
        netns,
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--",
    ]
    args += ["wrk", "-t1", f"-c{CONCURRENCY}", f"-d{DURATION}s", "--latency"]
    if host:
        args += ["-H", f"Host: {host}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=DURATION + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return {"rps": round(rps, 1), "p50_ms": round(p50, 3)}


def run() -> dict[str, Any]:
    if os.geteuid() != 0:
        return {"skipped": "needs root (network namespaces)", "results": []}
    ensure_tools()
    d = Path(tempfile.mkdtemp(prefix="bench-isolation-"))
    d.chmod(0o755)
    state = d / "state"
    cli = [sys.executable, "-m", "meshward", "--state", str(state)]
    results: dict[str, Any] = {}
    try:
        (d / "mesh.yaml").write_text(_mesh(d))
        subprocess.run([*cli, "up", "-f", str(d / "mesh.yaml"), "--detach", "--control-port", "0"],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        doc = json.loads(subprocess.run([*cli, "status", "--json"], check=True, capture_output=True).stdout)
        client = next(w for w in doc["workloads"] if w["name"] == "client")
        netns, uid = client["netns"], client["app_uid"]
        rows = {
            "http_proxy": ("http://127.0.0.1:15001/data.json", "nginx.bench"),
            "transparent": ("http://nginx.bench/data.json", None),
        }
        for url, host in rows.values():
            _wrk_in(netns, uid, url, host)  # warm-up
        for rnd in range(4):  # alternate the order: the machine is shared
            for name in list(rows) if rnd == 0 else list(reversed(rows)):
                url, host = rows[name]
                run_ = _wrk_in(netns, uid, url, host)
                results.setdefault(name, []).append(run_)
    finally:
        subprocess.run([*cli, "down"], capture_output=True, timeout=60)
        shutil.rmtree(d, ignore_errors=True)
    mean = {name: sum(r["rps"] for r in runs) / len(runs) for name, runs in results.items()}
    ratio = round(mean["transparent"] / mean["http_proxy"], 3)  # means of alternating rounds
    results["ratio_transparent_vs_http_proxy"] = ratio
    results["results"] = [
        {
            "name": "throughput transparent / HTTP_PROXY path (same sidecars, -c 32)",
            "value": ratio,
            "unit": "ratio",
            "target": ">= 0.9",
            "met": ratio >= 0.9,
        }
    ]
    return results


def main() -> None:
    print(json.dumps(run(), indent=2))


if __name__ == "__main__":
    main()
