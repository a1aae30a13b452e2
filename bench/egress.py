"""Egress with TLS origination: ``.venv/bin/python -m bench.egress``.

Side by side in one run, against the same upstream (nginx from Debian serving a ~1 KB JSON over
HTTPS with a certificate for ``nginx.bench`` from a CA made for the run, not the mesh's):

- ``haproxy``  wrk → HAProxy 2.6 (plain in) ─HTTPS, chain + host name verified→ nginx;
- ``meshward`` wrk → Meshward sidecar, outbound (plain in, ``HTTP_PROXY`` style with a Host
  header) → egress chain (EgressPolicy, spend, telemetry: access log and metrics) ─HTTPS, chain
  + host name verified against the ExternalService's ``caBundle``→ nginx. One worker.

The host is declared as an ExternalService reached through ``addresses`` and allowed by an
EgressPolicy. No credential is injected: that needs a control plane to hand the secret out, and
the header rewrite it adds is negligible next to the TLS. Same load as ``bench.proxy``
(:func:`bench.proxy.measure`): throughput at ``-c 32``, then p50/p99 at 500, 1,000 and 2,000
requests/s; the ratio is Meshward's throughput over HAProxy's, the added p50 is Meshward's p50
minus HAProxy's at 1,000 requests/s (both do the same TLS origination).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.common import workdir
from bench.proxy import cpu_rows, ensure_tools, measure, start_nginx
from tests.egress.provider import leaf_certificate, make_ca
from tests.support.proc import Proc, free_port, spawn, wait_port
from tests.support.sidecar import issue_svid, make_snapshot, start_sidecar, write_bootstrap

HOST = "nginx.bench"


def start_haproxy(d: Path, upstream: int, ca: Path, procs: list[Proc]) -> tuple[int, list[int]]:
    port = free_port()
    (d / "haproxy.cfg").write_text(
        f"""
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend plain_in
  bind 127.0.0.1:{port}
  default_backend outside
backend outside
  server api 127.0.0.1:{upstream} ssl ca-file {ca} verify required verifyhost {HOST} sni str({HOST}) ssl-min-ver TLSv1.2
"""
    )
    proc = spawn(["haproxy", "-db", "-f", str(d / "haproxy.cfg")], d / "haproxy.log")
    procs.append(proc)
    wait_port(port)
    return port, [proc.pid]


def start_meshward(d: Path, upstream: int, ca: Path, procs: list[Proc]) -> tuple[int, list[int]]:
    svid = issue_svid(d / "svid", "bench/client")
    policies = [
        {
            "apiVersion": "meshward.dev/v1alpha1",
            "kind": "ExternalService",
            "metadata": {"name": "api", "namespace": "bench"},
            "spec": {
                "hosts": [HOST],
                "ports": [{"number": 443, "protocol": "HTTPS"}],
                "addresses": [f"127.0.0.1:{upstream}"],
                "caBundle": str(ca),
            },
        },
        {
            "apiVersion": "meshward.dev/v1alpha1",
            "kind": "EgressPolicy",
            "metadata": {"name": "client-may-call", "namespace": "bench"},
            "spec": {"rules": [{"to": [{"hosts": [HOST], "methods": ["GET"], "paths": ["/data.json"]}]}]},
        },
    ]
    boot = write_bootstrap(d / "mw.json", svid, make_snapshot("bench/client", policies=policies))
    sidecar = start_sidecar(boot, "mw-egress")
    procs.append(sidecar.proc)
    return sidecar.outbound[1], [sidecar.proc.pid]


def run() -> dict[str, Any]:
    ensure_tools()
    results: dict[str, Any] = {}
    with workdir("egress") as d:
        procs: list[Proc] = []
        try:
            ca_key, ca_cert, ca_path = make_ca(d, "bench-egress")
            cert, key = leaf_certificate(d, ca_key, ca_cert, HOST)
            nginx = start_nginx(d, procs, tls=(cert, key))
            (d / "hap").mkdir()
            hap_port, hap_pids = start_haproxy(d / "hap", nginx, ca_path, procs)
            results["haproxy"] = measure(hap_port, hap_pids, d)
            (d / "mw").mkdir()
            mw_port, mw_pids = start_meshward(d / "mw", nginx, ca_path, procs)
            results["meshward"] = measure(mw_port, mw_pids, d)
        finally:
            for p in reversed(procs):
                p.stop()
    hap, mw = results["haproxy"], results["meshward"]
    ratio = mw["throughput"]["rps"] / hap["throughput"]["rps"]
    added = mw["rate_1000"]["p50_ms"] - hap["rate_1000"]["p50_ms"]
    results["throughput_ratio_meshward_vs_haproxy"] = round(ratio, 3)
    results["added_p50_ms_vs_haproxy_at_1000rps"] = round(added, 3)
    results["results"] = [
        {
            "name": "egress throughput meshward / haproxy, TLS origination (-c 32)",
            "value": round(ratio, 3),
            "unit": "x",
            "target": ">= 0.6",
            "met": ratio >= 0.6,
        },
        {
            "name": "added p50 over haproxy at 1,000 req/s",
            "value": round(added, 3),
            "unit": "ms",
            "target": "< 0.5",
            "met": added < 0.5,
        },
        *cpu_rows(mw, hap, ("meshward sidecar", "haproxy")),
    ]
    results["notes"] = (
        "plain HTTP in, HTTPS out with the chain and host name verified, keep-alive to the upstream in both; "
        "Meshward also runs its egress chain (EgressPolicy decision, access log, metrics). "
        "The added p50 is Meshward's p50 minus HAProxy's doing the same TLS origination."
    )
    return results


def main() -> None:
    results = run()
    print(json.dumps(results, indent=2) if "--json" in sys.argv else json.dumps(results["results"], indent=2))


if __name__ == "__main__":
    main()
