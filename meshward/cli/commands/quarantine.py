"""``meshward quarantine [list|release ID] [--json]``: identities quarantined by detection."""

from __future__ import annotations

import argparse
import json

from meshward.cli.errors import CliError

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "quarantine",
        parents=[common],
        help="list or release quarantined identities",
        description="Identities quarantined by a detection alert (a generated, time-boxed DENY): list, release.",
    )
    p.add_argument("action", nargs="?", choices=("list", "release"), default="list")
    p.add_argument("id", nargs="?", help="the quarantine id (or the alert id) to release")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=quarantine)


def quarantine(args: argparse.Namespace) -> int:
    from meshward.control.detection_access import DetectionAccessError, detection_access
    from meshward.control.operations import _user
    from meshward.identity.state import MeshState

    try:
        access = detection_access(MeshState(args.state))
        if args.action == "release":
            if not args.id:
                raise CliError("meshward quarantine release needs an id (see `meshward quarantine list`)")
            released = access.release(args.id, _user())
            if args.json:
                print(json.dumps(released, indent=2))
            else:
                print(
                    f"released {released['id']}: {released['subject']} "
                    f"({released['policy']} removed, generation {released['generation']})"
                )
            return 0
        found = access.quarantines()
    except DetectionAccessError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print("no quarantines")
        return 0
    print(f"{'ID':<10} {'STATE':<9} {'EXPIRES':<21} {'ALERT':<10} {'POLICY':<32} SUBJECT")
    for q in found:
        print(
            f"{q['id']:<10} {q['state']:<9} {q['expires']:<21} {q['alert']:<10} {q['policy']:<32} {q['subject']}"
        )
    return 0
