"""``meshward status [--json]``: control plane, workloads, identities, ports, config, warnings."""

from __future__ import annotations

import argparse
import json

__all__ = ["NOT_RUNNING", "register"]

NOT_RUNNING = 3  # like `systemctl status` of a stopped unit


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "status",
        parents=[common],
        help="show the mesh: control plane, workloads, warnings",
        description="Show the control plane, every workload (ports, admin port, state, exit code), "
        "and warnings. Exits 3 when nothing runs (no control plane and no workload).",
    )
    p.add_argument("--json", action="store_true", help="the machine-readable document (DESIGN.md §5)")
    p.set_defaults(func=status)


def status(args: argparse.Namespace) -> int:
    from meshward.identity.state import MeshState
    from meshward.mesh.status import mesh_status, render_status

    doc = mesh_status(MeshState(args.state))
    print(json.dumps(doc, indent=2) if args.json else render_status(doc))
    running = doc["control"]["url"] or doc["runner"] or doc["workloads"]
    return 0 if running else NOT_RUNNING
