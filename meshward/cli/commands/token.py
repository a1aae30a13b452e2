"""``meshward token create``: a join token that lets one new workload get its first SVID.

The token is printed once on stdout (nothing else is, so ``TOKEN=$(meshward token create ...)``
works); only its hash is stored. Details go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys

from meshward.cli.args import accept_state, duration_arg, show_usage
from meshward.cli.errors import CliError

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "token",
        parents=[common],
        help="join tokens for new workloads",
        description="Create a one-time join token with which a new workload's sidecar gets its identity.",
    )
    p.set_defaults(func=show_usage(p))
    tsub = p.add_subparsers(dest="token_command", metavar="SUBCOMMAND")
    c = tsub.add_parser(
        "create",
        help="make a join token for one identity",
        description="Make a join token for exactly one identity; print it once.",
    )
    accept_state(c)
    c.add_argument("--id", required=True, dest="identity", help="NS/NAME, TD/ns/NS/sa/NAME or spiffe://...")
    c.add_argument("--ttl", default="10m", help="how long the token is valid (default: %(default)s)")
    c.add_argument("--uses", type=int, default=1, help="how many SVIDs it may obtain (default: %(default)s)")
    c.set_defaults(func=create)


def create(args: argparse.Namespace) -> int:
    from meshward.identity.issuance import IdentityService
    from meshward.identity.ledger import iso
    from meshward.identity.spiffe import InvalidSpiffeId
    from meshward.identity.state import MeshState

    ttl = duration_arg(args.ttl, "--ttl")
    state = MeshState(args.state)
    with contextlib.closing(IdentityService(state)) as service:
        try:
            sid = service.identity(args.identity)
            token = service.create_token(sid, ttl, args.uses)
        except (InvalidSpiffeId, ValueError) as exc:
            raise CliError(str(exc)) from None
    expires = iso(dt.datetime.now(dt.UTC) + ttl)
    uses = "1 use" if args.uses == 1 else f"{args.uses} uses"
    print(token)
    print(f"join token for {sid.uri}: {uses}, expires {expires}", file=sys.stderr)
    return 0
