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
from typing import TYPE_CHECKING

import meshward.cli.commands as commands_pkg
from meshward.cli.errors import CliError

__all__ = ["build_parser", "command_names", "main"]


def _default_state() -> str:
    return os.environ.get("MESHWARD_STATE") or "./.meshward"


if TYPE_CHECKING:
    Register = Callable[[argparse._SubParsersAction[argparse.ArgumentParser], argparse.ArgumentParser], None]


def _version() -> str:
    from meshward import __version__

    return __version__


def command_names() -> list[str]:
    """Every command: the modules of ``meshward.cli.commands`` (listed, not imported)."""
    return sorted(info.name for info in pkgutil.iter_modules(commands_pkg.__path__))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of the command ``only`` alone (one module imported).

    Command modules import nothing heavy at their top (their commands import what they need when
    they run), so building the full parser for ``--help`` stays cheap. A module that cannot be
    imported (e.g. half edited) turns into a command that says so: the others keep working.
    """
    # ``--state`` is accepted before the command (``meshward --state D status``) and after it
    # (``meshward status --state D``): the top level holds the default, a command's own
    # ``--state`` only overrides it when given (SUPPRESS).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"mesh state directory (default: $MESHWARD_STATE, else ./.meshward; now {_default_state()})",
    )
    parser = argparse.ArgumentParser(prog="meshward", description="A zero-trust service mesh for AI models.")
    parser.add_argument("--version", action="version", version=f"meshward {_version()}")
    parser.add_argument(
        "--state",
        type=Path,
        default=Path(_default_state()),
        help="mesh state directory (default: %(default)s)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in [only] if only is not None else command_names():
        try:
            module = importlib.import_module(f"{commands_pkg.__name__}.{name}")
            register: Register = module.register
        except Exception as exc:  # one broken command must not break the rest
            _register_broken(sub, name, exc)
            continue
        register(sub, common)
    return parser


def _register_broken(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, exc: Exception
) -> None:
    reason = f"{type(exc).__name__}: {exc}"
    # No options (an unused prefix char): whatever follows the name is taken, then refused.
    p = sub.add_parser(name, help=f"(unavailable: {reason})", add_help=False, prefix_chars="\x00")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def refuse(_args: argparse.Namespace) -> int:
        raise CliError(f"the {name!r} command cannot load (a meshward bug): {reason}")

    p.set_defaults(func=refuse)


def _command_in(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names, when it names one (after an optional leading ``--state D``)."""
    rest = list(argv)
    if rest and rest[0] == "--state":
        rest = rest[2:]
    elif rest and rest[0].startswith("--state="):
        rest = rest[1:]
    return rest[0] if rest and rest[0] in command_names() else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_in(argv))
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        code: int = func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except CliError as exc:
        print(f"meshward: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # piped into `head`: the reader left, which is not an error
        _quiet_stdout()
        return 0
    except OSError as exc:
        print(f"meshward: {exc}", file=sys.stderr)
        return 1


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush raises no second BrokenPipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
