"""Entry point: builds the parser from every module in ``meshward.cli.commands``.

Every command takes ``--state DIR`` (default ``$MESHWARD_STATE``, else ``./.meshward``).
Errors are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import meshward.cli.commands as commands_pkg
from meshward.cli.errors import CliError

__all__ = ["build_parser", "main"]


def _default_state() -> str:
    return os.environ.get("MESHWARD_STATE") or "./.meshward"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state",
        type=Path,
        default=Path(_default_state()),
        help="mesh state directory (default: %(default)s)",
    )
    parser = argparse.ArgumentParser(prog="meshward", description="A zero-trust service mesh for AI models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands_pkg.__name__}.{info.name}")
        register: Callable[
            [argparse._SubParsersAction[argparse.ArgumentParser], argparse.ArgumentParser], None
        ]
        register = module.register
        register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        code: int = func(args)
        return code
    except CliError as exc:
        print(f"meshward: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"meshward: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
