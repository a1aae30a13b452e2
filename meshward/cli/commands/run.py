"""``meshward run --as NS/NAME -- CMD [ARGS...]``: CMD with a temporary sidecar of that identity.

The exit code is CMD's; the sidecar exits with it.
"""

from __future__ import annotations

import argparse

from meshward.cli.errors import CliError

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "run",
        parents=[common],
        help="run one command with a temporary sidecar of an identity",
        description="Run CMD with HTTP_PROXY set to a temporary sidecar holding the identity NS/NAME.",
    )
    p.add_argument("--as", dest="identity", required=True, help="NS/NAME, TD/ns/NS/sa/NAME or spiffe://...")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from meshward.identity.state import MeshState
    from meshward.mesh.oneoff import run_with_sidecar
    from meshward.mesh.workload import MeshError

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    try:
        return run_with_sidecar(MeshState(args.state), args.identity, command)
    except MeshError as exc:
        raise CliError(str(exc)) from None
