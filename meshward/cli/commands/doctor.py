"""``meshward doctor [--json]``: is this mesh healthy? One line per check, with the fix.

Checks the state directory, the control plane (reachable over mTLS), the clocks, the CA and
workload certificates, every sidecar's config generation (ACK/NACK), the workloads, Redis when
a RateLimitPolicy uses it, and the control plane port. Exit 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "doctor",
        parents=[common],
        help="check the mesh's health: control plane, certificates, sidecars, clocks, ports",
        description="Run every health check; each line is pass, warn or fail with the fix. Exit 1 on any fail.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=doctor)


def doctor(args: argparse.Namespace) -> int:
    from meshward.cli.commands.analyze import current_resources
    from meshward.identity.state import MeshState
    from meshward.mesh.doctor import run_checks

    state = MeshState(args.state)
    results = run_checks(state, lambda: current_resources(state))
    failed = any(r.outcome == "fail" for r in results)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [r.to_json() for r in results]}, indent=2))
    else:
        for r in results:
            print(f"{r.outcome.upper():<5} {r.name}: {r.detail}")
            if r.fix and r.outcome != "pass":
                print(f"      fix: {r.fix}")
    return 1 if failed else 0
