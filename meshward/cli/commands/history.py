"""``meshward history [--json]``: every generation, who applied it, when, and what changed."""

from __future__ import annotations

import argparse
import json

from meshward.cli.errors import CliError

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "history",
        parents=[common],
        help="list config generations",
        description="Every generation: when, by whom, how, and which resources it changed.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=history)


def history(args: argparse.Namespace) -> int:
    from meshward.control.operations import ConfigError, config_access
    from meshward.identity.state import MeshState

    try:
        generations = config_access(MeshState(args.state)).history()["generations"]
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(generations, indent=2))
        return 0
    print(f"{'GENERATION':<11} {'APPLIED AT':<21} {'SOURCE':<16} {'CHANGES':<36} BY")
    for g in generations:
        summary = ", ".join(f"{n} {action}" for action, n in sorted(g["summary"].items()))
        print(
            f"{g['generation']:<11} {g['applied_at']:<21} {g['source']:<16} {summary:<36} {g['applied_by']}"
        )
        for c in g.get("changes", []):
            print(f"{'':<11} {c['action']:<10} {c['kind']} {c['namespace']}/{c['name']}")
    return 0
