"""``meshward ca``: rotate the authority and show the trust bundle.

- ``meshward ca rotate``: a new issuing intermediate under the same root.
- ``meshward ca rotate --root [--overlap 24h]``: a new root too; the old root stays in
  ``bundle.pem`` for the overlap so old-root and new-root workloads keep verifying each other.
- ``meshward ca rotate --ca-cert F --ca-key F``: plug in a new operator CA (root or intermediate
  chain, as for ``init``).
- ``meshward ca bundle``: print the trust bundle, after dropping roots whose overlap ended.

The procedure is in ``docs/identity.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from meshward.cli.args import accept_state, duration_arg, show_usage
from meshward.cli.errors import CliError

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "ca",
        parents=[common],
        help="rotate the certificate authority",
        description="Rotate the issuing intermediate (or the root, with an overlap) and print the trust bundle.",
    )
    p.set_defaults(func=show_usage(p))
    csub = p.add_subparsers(dest="ca_command", metavar="SUBCOMMAND")

    r = csub.add_parser(
        "rotate",
        help="new intermediate (and with --root a new root)",
        description="Make a new issuing intermediate; with --root also a new root, keeping the old "
        "root trusted for the overlap.",
    )
    accept_state(r)
    r.add_argument("--root", action="store_true", help="also make a new root")
    r.add_argument(
        "--overlap", default="24h", help="how long the old root stays trusted (default: %(default)s)"
    )
    r.add_argument("--ca-cert", type=Path, help="plug in a new operator CA (root, or intermediate + chain)")
    r.add_argument("--ca-key", type=Path, help="the key of the first certificate in --ca-cert")
    r.set_defaults(func=rotate_ca)

    b = csub.add_parser("bundle", help="print the trust bundle (PEM)")
    accept_state(b)
    b.set_defaults(func=show_bundle)


def rotate_ca(args: argparse.Namespace) -> int:
    from meshward.identity.bootstrap import CaSetupRefused
    from meshward.identity.ledger import iso
    from meshward.identity.rotation import rotate
    from meshward.identity.state import MeshState

    overlap = duration_arg(args.overlap, "--overlap")
    state = MeshState(args.state)
    try:
        result = rotate(state, new_root=args.root, overlap=overlap, ca_cert=args.ca_cert, ca_key=args.ca_key)
    except CaSetupRefused as exc:
        raise CliError(str(exc)) from None
    state.ensure_operator_cert()
    print(f"new issuing CA {result.intermediate_subject}, expires {iso(result.intermediate_not_after)}")
    if result.old_root_trusted_until is not None:
        print(f"new root; the old root stays in the trust bundle until {iso(result.old_root_trusted_until)}")
    print(f"trust bundle {state.bundle_path} holds {result.bundle_roots} root(s)")
    print("workloads get certificates from the new CA when they next renew (at half-life)")
    return 0


def show_bundle(args: argparse.Namespace) -> int:
    from meshward.identity.rotation import refresh_bundle
    from meshward.identity.state import MeshState

    state = MeshState(args.state)
    refresh_bundle(state)
    sys.stdout.write(state.bundle_pem().decode())
    return 0
