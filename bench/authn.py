"""End-user authentication and the ingress gateway: ``.venv/bin/python -m bench.authn``.

1. Per-request cost, in process: an ES256 JWT verified once (signature check) and again from the
   verified-token cache (what a caller that reuses its token pays: the goal is < 50 µs), an RS256
   and an EdDSA first check for comparison, and an API key lookup (one SHA-256 + dict access).
2. Throughput, side by side in one run against the same nginx: wrk over HTTPS with a bearer JWT
   → HAProxy 2.6 terminating TLS → nginx (one hop: what a plain TLS-terminating load balancer
   does), and wrk over HTTPS with the same JWT → Meshward gateway (TLS, JWT verification,
   authorization on the end user, routing) ═mTLS═▶ Meshward sidecar → nginx (what Meshward does:
   two hops, the second mutually authenticated). One worker / thread each.
"""

from __future__ import annotations

import json
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import QUICK, workdir
from bench.proxy import ensure_tools, start_nginx, wrk
from meshward.authn.apikeys import ApiKeyEntry, ApiKeyTable, hash_key, new_key
from meshward.authn.jwt import IssuerKeys, JwtVerifier, keys_from_jwks
from meshward.config.snapshot import ServiceEntry
from tests.authn.keys import make_idp, server_cert
from tests.support.proc import Proc, free_port, spawn, wait_port
from tests.support.sidecar import issue_svid, make_snapshot, start_sidecar, write_bootstrap

DURATION = 3 if QUICK else 5
CONCURRENCY = 32
ISSUER = "https://idp.bench"


def _per_call_us(fn: Callable[[], object], number: int) -> float:
    best = min(timeit.repeat(fn, number=number, repeat=5))
    return round(best / number * 1e6, 2)


def _verify_costs(alg: str) -> dict[str, float]:
    idp = make_idp(ISSUER, alg, "k")
    keys = (IssuerKeys(ISSUER, ("api",), keys_from_jwks(idp.jwks())),)
    token = idp.token(aud="api", exp=int(time.time()) + 3600)
    now = time.time()
    out = {f"{alg}_first_verify_us": _per_call_us(lambda: JwtVerifier(keys).verify(token, now), 200)}
    cached = JwtVerifier(keys)
    cached.verify(token, now)
    out[f"{alg}_cached_verify_us"] = _per_call_us(lambda: cached.verify(token, now), 20000)
    return out


def micro() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for alg in ("ES256", "RS256", "EdDSA"):
        out.update(_verify_costs(alg))
    key = new_key()
    table = ApiKeyTable([(hash_key(key), ApiKeyEntry("s/k", "apikeys/k", None, False))])
    out["api_key_lookup_us"] = _per_call_us(lambda: table.authenticate(key, 0.0), 20000)
    return out


def start_haproxy_tls(d: Path, upstream: int, pem: Path, procs: list[Proc]) -> tuple[int, list[int]]:
    port = free_port()
    cfg = d / "hap-tls.cfg"
    cfg.write_text(
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
frontend tls_in
  bind 127.0.0.1:{port} ssl crt {pem} ssl-min-ver TLSv1.2
  default_backend app
backend app
  server nginx 127.0.0.1:{upstream}
"""
    )
    proc = spawn(["haproxy", "-db", "-f", str(cfg)], d / "hap-tls.log")
    procs.append(proc)
    wait_port(port)
    return port, [proc.pid]


def start_gateway(
    d: Path, upstream: int, cert: Path, key: Path, jwks: str, procs: list[Proc]
) -> tuple[int, list[int]]:
    server_svid = issue_svid(d / "svc", "bench/nginx")
    gw_svid = issue_svid(d / "gw", "bench/gw")
    allow_gateway = {
        "apiVersion": "meshward.dev/v1alpha1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "gw-users", "namespace": "bench"},
        "spec": {"rules": [{"from": [{"source": {"principals": ["bench/gw"]}}]}]},
    }
    server_boot = write_bootstrap(
        d / "svc.json",
        server_svid,
        make_snapshot("bench/nginx", policies=[allow_gateway]),
        app=f"127.0.0.1:{upstream}",
    )
    server = start_sidecar(server_boot, "svc")
    procs.append(server.proc)
    entry = ServiceEntry(
        "nginx", "bench", (f"127.0.0.1:{server.inbound_port}",), (server_svid.spiffe_id.uri,)
    )
    gateway_docs = [
        {
            "apiVersion": "meshward.dev/v1alpha1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "bench"},
            "spec": {"routes": [{"match": {"pathPrefix": "/"}, "to": {"service": "nginx.bench"}}]},
        },
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "RequestAuthentication",
            "metadata": {"name": "idp", "namespace": "bench"},
            "spec": {"jwtRules": [{"issuer": ISSUER, "audiences": ["api"], "jwks": jwks}]},
        },
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "users", "namespace": "bench"},
            "spec": {"rules": [{"from": [{"source": {"requestPrincipals": [f"{ISSUER}/*"]}}]}]},
        },
    ]
    outbound = free_port()
    gw_boot = write_bootstrap(
        d / "gw.json",
        gw_svid,
        make_snapshot("bench/gw", services=[entry], policies=gateway_docs),
        app=f"127.0.0.1:{outbound}",
        options={"inbound_tls": "server", "inbound_cert": str(cert), "inbound_key": str(key)},
        listeners={"inbound": "127.0.0.1:0", "outbound": f"127.0.0.1:{outbound}", "admin": "127.0.0.1:0"},
    )
    gw = start_sidecar(gw_boot, "gw")
    procs.append(gw.proc)
    return gw.inbound_port, [gw.proc.pid, server.proc.pid]


def _wrk_https(port: int, token: str) -> dict[str, float]:
    return wrk(port, CONCURRENCY, DURATION, headers={"Authorization": f"Bearer {token}"}, scheme="https")


def throughput() -> dict[str, Any]:
    ensure_tools()
    idp = make_idp(ISSUER, "ES256", "k")
    token = idp.token(aud="api", exp=int(time.time()) + 3600)
    out: dict[str, Any] = {}
    with workdir("authn") as d:
        procs: list[Proc] = []
        try:
            nginx = start_nginx(d, procs)
            cert, key, both = server_cert(d)
            hap_port, _ = start_haproxy_tls(d, nginx, both, procs)
            gw_port, _ = start_gateway(d, nginx, cert, key, idp.jwks(), procs)
            for name, port in (("haproxy_tls", hap_port), ("meshward_gateway", gw_port)):
                _wrk_https(port, token)  # warm-up
                out[name] = _wrk_https(port, token)
        finally:
            for p in reversed(procs):
                p.stop()
    out["ratio_gateway_vs_haproxy"] = round(out["meshward_gateway"]["rps"] / out["haproxy_tls"]["rps"], 3)
    return out


def run() -> dict[str, Any]:
    results: dict[str, Any] = {"micro": micro()}
    rows: list[dict[str, Any]] = [
        {
            "name": "JWT ES256 verification, cached token",
            "value": results["micro"]["ES256_cached_verify_us"],
            "unit": "µs",
            "target": "< 50",
            "met": results["micro"]["ES256_cached_verify_us"] < 50,
        },
        {
            "name": "JWT ES256 verification, first sight (signature check)",
            "value": results["micro"]["ES256_first_verify_us"],
            "unit": "µs",
            "target": None,
            "met": None,
        },
    ]
    try:
        results["throughput"] = throughput()
        rows.append(
            {
                "name": "gateway (TLS + JWT + authz + mTLS hop) / HAProxy TLS termination, -c 32",
                "value": results["throughput"]["ratio_gateway_vs_haproxy"],
                "unit": "ratio",
                "target": None,
                "met": None,
            }
        )
    except Exception as exc:  # tools missing or a process that would not start
        results["throughput_skipped"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    results["results"] = rows
    return results


def main() -> None:
    print(json.dumps(run(), indent=2))


if __name__ == "__main__":
    main()
