"""``meshward control [--listen HOST:PORT]``: run the control plane alone, in the foreground
(the arguments; :mod:`meshward.control.main` does the rest)."""

from __future__ import annotations

import argparse

from meshward.cli.errors import CliError

__all__ = ["DEFAULT_LISTEN_TEXT", "register", "run_control"]

#: ``meshward.control.server.DEFAULT_LISTEN`` as text (a test keeps them equal): the parser is
#: built without importing the control plane.
DEFAULT_LISTEN_TEXT = "127.0.0.1:15012"


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "control",
        parents=[common],
        help="run the control plane (CA, config API, distribution)",
        description="Run the control plane of the mesh in --state, in the foreground.",
    )
    p.add_argument(
        "--listen",
        default=DEFAULT_LISTEN_TEXT,
        help="HOST:PORT to serve on (default: %(default)s; port 0 picks a free one)",
    )
    p.set_defaults(func=run_control)


def run_control(args: argparse.Namespace) -> int:
    from meshward.control.main import ControlStartError, serve_forever

    try:
        return serve_forever(args.state, args.listen)
    except ControlStartError as exc:
        raise CliError(str(exc)) from None
