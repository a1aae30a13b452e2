"""``meshward alerts [list|show ID|ack ID] [--json]``: the alerts raised by threat detection."""

from __future__ import annotations

import argparse
import json
from typing import Any

from meshward.cli.errors import CliError

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "alerts",
        parents=[common],
        help="list, show and acknowledge detection alerts",
        description="The threat-detection alerts of the mesh, newest first: list, show one, acknowledge.",
    )
    p.add_argument("action", nargs="?", choices=("list", "show", "ack"), default="list")
    p.add_argument("id", nargs="?", help="the alert id (show, ack)")
    p.add_argument("--subject", help="only alerts about this identity, model or address (list)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=alerts)


def _user() -> str:
    from meshward.control.operations import _user as user

    return user()


def alerts(args: argparse.Namespace) -> int:
    from meshward.control.detection_access import DetectionAccessError, detection_access
    from meshward.identity.state import MeshState

    if args.action in ("show", "ack") and not args.id:
        raise CliError(f"meshward alerts {args.action} needs an alert id (see `meshward alerts list`)")
    try:
        access = detection_access(MeshState(args.state))
        if args.action == "list":
            subject = args.subject
            if subject and not subject.startswith(("spiffe://", "address:", "model:", "workload:")):
                from meshward.identity.spiffe import parse_identity

                try:
                    subject = parse_identity(subject, MeshState(args.state).trust_domain).uri
                except ValueError:
                    pass
            found = access.alerts(subject=subject)
            if args.json:
                print(json.dumps(found, indent=2))
            else:
                _table(found)
            return 0
        alert = access.show(args.id) if args.action == "show" else access.ack(args.id, _user())
    except DetectionAccessError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(alert, indent=2))
    else:
        _detail(alert)
    return 0


def _table(found: list[dict[str, Any]]) -> None:
    if not found:
        print("no alerts")
        return
    print(f"{'ID':<10} {'TIME':<21} {'DETECTOR':<13} {'SEVERITY':<9} {'STATE':<13} {'COUNT':>5}  SUBJECT")
    for a in found:
        print(
            f"{a['id']:<10} {a['time']:<21} {a['detector']:<13} {a['severity']:<9} {a['state']:<13} "
            f"{a.get('count', 1):>5}  {a['subject']}"
        )


def _detail(a: dict[str, Any]) -> None:
    for key in ("id", "time", "updated", "detector", "severity", "state", "subject", "summary", "count"):
        print(f"{key + ':':<16}{a.get(key)}")
    for key in ("workload", "policy", "response", "acknowledged_by"):
        if a.get(key):
            print(f"{key + ':':<16}{a[key]}")
    print("evidence:")
    for k, v in sorted((a.get("evidence") or {}).items()):
        print(f"  {k}: {json.dumps(v)}")
