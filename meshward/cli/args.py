"""Small argparse helpers shared by the subcommands (stdlib only: imported on every CLI call)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path

from meshward.cli.errors import CliError

__all__ = ["accept_state", "duration_arg", "show_usage"]


def show_usage(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """A ``func`` for a command group run without its subcommand: print its help, exit 2."""

    def show(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show


def accept_state(parser: argparse.ArgumentParser) -> None:
    """Accept ``--state`` after a sub-subcommand too; SUPPRESS keeps an earlier one from resetting."""
    parser.add_argument("--state", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def duration_arg(text: str, flag: str) -> dt.timedelta:
    """Parse ``30s``/``10m``/``1h``/``7d`` given for ``flag``, or fail with a one-line error."""
    from meshward.resources.mesh import parse_duration

    try:
        return dt.timedelta(seconds=parse_duration(text))
    except ValueError as exc:
        raise CliError(f"{flag}: {exc}") from None
