"""``meshward rollback GENERATION``: a new generation whose resources equal GENERATION's."""

from __future__ import annotations

import argparse
import sys

from meshward.cli.commands.apply import print_changes
from meshward.cli.errors import CliError

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "rollback",
        parents=[common],
        help="restore the resources of a previous generation",
        description="Write a new generation whose resources equal GENERATION's (undoes applies and deletes).",
    )
    p.add_argument("generation", type=int, help="the generation to restore (see `meshward history`)")
    p.set_defaults(func=rollback)


def rollback(args: argparse.Namespace) -> int:
    from meshward.control.operations import ConfigError, config_access
    from meshward.identity.state import MeshState

    try:
        result = config_access(MeshState(args.state)).rollback(args.generation)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    print_changes({"changes": [c for c in result["changes"] if c["action"] != "unchanged"]})
    if result.get("changed"):
        print(f"generation {result['generation']} restores generation {args.generation}", file=sys.stderr)
    else:
        print(
            f"generation {result['generation']} already equals generation {args.generation}", file=sys.stderr
        )
    return 0
