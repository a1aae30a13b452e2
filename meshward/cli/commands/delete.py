"""``meshward delete KIND NAME [-n NS]`` / ``meshward delete -f FILE``: a generation without them.

Like ``kubectl delete``: the resources named (or every resource of FILE) are removed in one new
generation, recorded in the history and the audit trail; ``meshward rollback N`` brings them
back. A Workload deleted this way is no longer routed to.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from meshward.cli.errors import CliError

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "delete",
        parents=[common],
        help="remove resources as a new generation (undo with rollback)",
        description="Remove the named resources (or every resource of FILE) as one new generation. "
        "`meshward rollback N` restores them.",
    )
    p.add_argument(
        "kind", nargs="?", help="Workload, AuthorizationPolicy, ... (any case, singular or plural)"
    )
    p.add_argument("name", nargs="*", help="one or more names")
    p.add_argument("-n", "--namespace", default="default", help="namespace (default: %(default)s)")
    p.add_argument("-f", "--filename", type=Path, help="delete every resource this YAML file defines")
    p.set_defaults(func=delete)


def _targets(args: argparse.Namespace) -> list[dict[str, str]]:
    from meshward.resources.loader import LoadError, load_file

    if args.filename is not None:
        if args.kind:
            raise CliError("give either -f FILE or KIND NAME, not both", 2)
        try:
            resources = load_file(args.filename)
        except LoadError as exc:
            raise CliError(str(exc)) from None
        if not resources:
            raise CliError(f"{args.filename}: no resources in the file (nothing to delete)")
        return [
            {"kind": r.kind, "namespace": r.metadata.namespace, "name": r.metadata.name} for r in resources
        ]
    if not args.kind or not args.name:
        raise CliError("usage: meshward delete KIND NAME [-n NS]  or  meshward delete -f FILE", 2)
    return [{"kind": args.kind, "namespace": args.namespace, "name": name} for name in args.name]


def delete(args: argparse.Namespace) -> int:
    from meshward.cli.commands.apply import print_changes
    from meshward.control.operations import ConfigError, config_access
    from meshward.identity.state import MeshState

    targets = _targets(args)
    try:
        result = config_access(MeshState(args.state)).delete(targets)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    print_changes({"changes": [c for c in result["changes"] if c["action"] == "deleted"]})
    print(
        f"generation {result['generation']} applied (undo: meshward rollback {result['generation'] - 1})",
        file=sys.stderr,
    )
    return 0
