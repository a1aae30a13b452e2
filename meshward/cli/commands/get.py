"""``meshward get KIND [NAME] [-n NS] [--generation N] [-o yaml|json]``: resources of a generation."""

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
        "get",
        parents=[common],
        help="show resources of the current generation",
        description="Show resources of the current generation (or of --generation N).",
    )
    p.add_argument("kind", help="Workload, AuthorizationPolicy, ... (any case, singular or plural)")
    p.add_argument("name", nargs="?", help="one resource by name")
    p.add_argument("-n", "--namespace", help="only this namespace")
    p.add_argument("--generation", type=int, metavar="N", help="a past generation (see `meshward history`)")
    p.add_argument("-o", "--output", choices=("table", "yaml", "json"), default="table")
    p.set_defaults(func=get)


def get(args: argparse.Namespace) -> int:
    import yaml

    from meshward.control.operations import ConfigError, config_access
    from meshward.identity.state import MeshState

    access = config_access(MeshState(args.state))
    try:
        result = access.get(args.kind, args.name, args.namespace, args.generation)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    items = result["items"]
    if args.name and not items:
        where = f" in namespace {args.namespace}" if args.namespace else ""
        raise CliError(f"{args.kind} {args.name!r} not found{where} (generation {result['generation']})")
    if args.output == "json":
        print(json.dumps(items[0] if args.name and len(items) == 1 else items, indent=2))
    elif args.output == "yaml":
        sys.stdout.write(yaml.safe_dump_all(items, sort_keys=False) if items else "")
    else:
        if not items:
            print(f"no {args.kind} in generation {result['generation']}", file=sys.stderr)
            return 0
        width = max(len(i["metadata"]["namespace"]) for i in items)
        print(f"{'NAMESPACE':<{max(width, 9)}}  KIND{' ' * 16}NAME")
        for i in items:
            print(f"{i['metadata']['namespace']:<{max(width, 9)}}  {i['kind']:<20}{i['metadata']['name']}")
    return 0
