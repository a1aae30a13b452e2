"""``meshward diff N M [--json]``: what changed from generation N to generation M."""

from __future__ import annotations

import argparse
import json
import sys

from meshward.cli.errors import CliError

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "diff",
        parents=[common],
        help="compare two config generations",
        description="List the resources created, configured or deleted from generation N to M, "
        "with a YAML diff of each configured one.",
    )
    p.add_argument("before", type=int, metavar="N", help="the earlier generation (0: empty)")
    p.add_argument("after", type=int, metavar="M", help="the later generation")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=diff)


def diff(args: argparse.Namespace) -> int:
    from meshward.control.operations import ConfigError, config_access
    from meshward.identity.state import MeshState

    try:
        result = config_access(MeshState(args.state)).compare(args.before, args.after)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if not result["changes"]:
        print(f"generations {args.before} and {args.after} hold the same resources", file=sys.stderr)
    for c in result["changes"]:
        print(f"{c['kind'].lower()} {c['namespace']}/{c['name']} {c['action']}")
        if c.get("diff"):
            sys.stdout.write(c["diff"])
    return 0
