"""``meshward apply -f FILE [--dry-run]``: validate the whole file, then store it as a generation.

A file with any problem is refused as a whole: every problem is printed as
``FILE:LINE: Kind ns/name: field.path: message`` and the running config is untouched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from meshward.cli.errors import CliError

__all__ = ["print_changes", "register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "apply",
        parents=[common],
        help="validate and apply resources as a new generation",
        description="Validate every document of FILE; if all are valid, store them as a new generation.",
    )
    p.add_argument("-f", "--filename", required=True, type=Path, help="YAML file ('-' for stdin)")
    p.add_argument("--dry-run", action="store_true", help="show what would change; change nothing")
    p.set_defaults(func=apply)


def print_changes(result: dict[str, Any], dry_run: bool = False) -> None:
    suffix = " (dry run)" if dry_run else ""
    for c in result.get("changes", []):
        print(f"{c['kind'].lower()} {c['namespace']}/{c['name']} {c['action']}{suffix}")
        if dry_run and c.get("diff"):
            sys.stdout.write(c["diff"])


def apply(args: argparse.Namespace) -> int:
    from meshward.control.operations import ConfigError, config_access
    from meshward.identity.state import MeshState

    if str(args.filename) == "-":
        text, filename = sys.stdin.read(), "<stdin>"
    else:
        try:
            text, filename = args.filename.read_text(encoding="utf-8"), str(args.filename)
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {args.filename}: {getattr(exc, 'strerror', None) or exc}") from None
    access = config_access(MeshState(args.state))
    try:
        result = access.apply(text, filename, args.dry_run)
    except ConfigError as exc:
        for problem in exc.problems[1:]:
            print(f"meshward: {problem}", file=sys.stderr)
        raise CliError(exc.problems[0] if exc.problems else str(exc)) from None
    print_changes(result, args.dry_run)
    if args.dry_run:
        print(f"dry run: generation {result['generation']} unchanged", file=sys.stderr)
    elif result.get("changed"):
        print(f"generation {result['generation']} applied", file=sys.stderr)
    else:
        print(f"no change: generation {result['generation']} stays current", file=sys.stderr)
    return 0
