"""``meshward demo [--once]``: the guided demo (what ``make demo`` runs).

Brings up ``examples/demo/mesh.yaml`` (two models, their sidecars, the control plane), runs the
scripted scenario with real callers and prints a table of what each step expected and observed.
Without ``--once`` the mesh stays up for exploration until Ctrl-C; with ``--once`` the exit code
is 0 only if every step held (1 if one did not, 3 if a capability is not built yet).
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="run the guided demo: a mesh of real models, callers and policies",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument(
        "--once", action="store_true", help="stop after the scenario; exit 0 only if every step held"
    )
    p.add_argument(
        "--isolation",
        choices=["none", "netns"],
        default="none",
        help="netns: every workload in its own network namespace, as its own user (root only)",
    )
    p.set_defaults(func=demo)


def demo(args: argparse.Namespace) -> int:
    from meshward.demo.run import run_demo

    return run_demo(args.state, args.once, args.isolation)
