"""``meshward top [--interval S] [--window S] [--once] [--json]``: a live table of routes.

One row per route (caller → service) with requests/s, error %, denials, p99 and LLM tokens,
from the sidecars' own metrics, redrawn in place every ``--interval`` seconds. ``--once``
measures one interval and prints the table (or ``--json``) for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from meshward.cli.errors import CliError

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "top",
        parents=[common],
        help="live table of routes: rps, errors, p99, tokens",
        description="A live table of the mesh's routes by requests/s, errors, p99 latency and tokens.",
    )
    p.add_argument("--interval", type=float, default=2.0, metavar="S", help="refresh period (default 2 s)")
    p.add_argument("--once", action="store_true", help="measure one interval, print, exit")
    p.add_argument("--json", action="store_true", help="with --once: the rows as JSON")
    p.set_defaults(func=top)


def routes(view: Any, previous: Any, latest: Any) -> list[dict[str, Any]]:
    """Rows for ``latest`` with rates measured since ``previous`` (same sample types as traffic)."""
    from meshward.dashboard.traffic import p99

    nodes = view.workloads()
    by_identity = {n.identity: ref for ref, n in nodes.items()}
    elapsed = max(latest.at - previous.at, 1e-9)
    rows = []
    for (source, destination), counts in sorted(latest.edges.items()):
        before = previous.edges.get((source, destination))
        delta = counts.requests - (before.requests if before else 0.0)
        if delta < 0:
            delta = counts.requests
        latency = p99(counts.buckets)
        node = nodes.get(destination)
        rows.append(
            {
                "source": by_identity.get(source, source),
                "destination": node.service if node and node.service else destination,
                "workload": destination,
                "rps": round(delta / elapsed, 2),
                "requests": int(counts.requests),
                "error_pct": round(100 * counts.errors / counts.requests, 1) if counts.requests else 0.0,
                "denied": int(counts.denied),
                "p99_ms": None if latency is None else round(latency * 1000, 1),
                "tokens": int(counts.tokens),
            }
        )
    rows.sort(key=lambda r: (-r["rps"], -r["requests"], r["source"], r["destination"]))
    return [r for r in rows if r["requests"] or r["tokens"]]


def render(rows: list[dict[str, Any]]) -> str:
    from meshward.mesh.status import align_columns

    table = [("SOURCE", "DESTINATION", "RPS", "REQUESTS", "ERR%", "DENIED", "P99", "TOKENS")]
    for r in rows:
        p99 = "-" if r["p99_ms"] is None else f"{r['p99_ms']}ms"
        table.append(
            (
                r["source"],
                r["destination"],
                f"{r['rps']:.2f}",
                str(r["requests"]),
                f"{r['error_pct']:.1f}",
                str(r["denied"]),
                p99,
                str(r["tokens"]),
            )
        )
    return "\n".join(align_columns(table))


def top(args: argparse.Namespace) -> int:
    from meshward.dashboard.view import MeshView
    from meshward.identity.state import MeshStateError

    if args.interval <= 0:
        raise CliError("--interval must be positive")
    try:
        view = MeshView(args.state)
    except MeshStateError as exc:
        raise CliError(str(exc)) from None
    if not view.sidecars():
        raise CliError(f"no sidecar is running in {args.state} (start the mesh with `meshward up`)")
    previous = view.sample()
    try:
        while True:
            time.sleep(args.interval)
            latest = view.sample()
            rows = routes(view, previous, latest)
            previous = latest
            if args.once:
                print(json.dumps(rows, indent=2) if args.json else render(rows))
                return 0
            stamp = time.strftime("%H:%M:%S")
            sys.stdout.write(f"\x1b[H\x1b[2Jmeshward top · {stamp} · every {args.interval:g} s\n\n")
            sys.stdout.write(render(rows) + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        return 0
