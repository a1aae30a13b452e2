"""``meshward init``: create a mesh's state directory and its certificate authority.

With no CA given, a new root (ECDSA P-256, 10 years) and issuing intermediate (1 year) are made.
``--ca-cert F --ca-key F`` plugs in the operator's CA: a self-signed root (meshward makes its
intermediate under it and keeps the root key), or an intermediate whose file also holds the chain
up to the root (the root key stays with the operator). See :mod:`meshward.identity.bootstrap`.
An existing mesh is never replaced without ``--force``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from meshward.cli.errors import CliError

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "init",
        parents=[common],
        help="create the mesh state and its certificate authority",
        description="Create the mesh state directory with a root CA and an issuing intermediate, "
        "or plug in an operator's CA.",
    )
    p.add_argument("--trust-domain", help="SPIFFE trust domain (default: from --ca-cert, else demo.local)")
    p.add_argument(
        "--ca-cert", type=Path, help="operator CA: a root, or an intermediate followed by its chain"
    )
    p.add_argument(
        "--ca-key", type=Path, help="the unencrypted PEM key of the first certificate in --ca-cert"
    )
    p.add_argument(
        "--force", action="store_true", help="replace an existing mesh (its certificates stop working)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from meshward.identity.bootstrap import CaSetupRefused, init_mesh
    from meshward.identity.state import MeshState

    state = MeshState(args.state)
    try:
        td = init_mesh(state, args.trust_domain, args.ca_cert, args.ca_key, force=args.force)
    except CaSetupRefused as exc:
        raise CliError(str(exc)) from None
    state.ensure_operator_cert()
    authority = state.load_authority()
    root_kind = "held here" if state.root_key_path.exists() else "key kept by the operator"
    print(f"initialized mesh {td!r} in {state.path}")
    print(f"  root CA       {authority.root.subject.rfc4514_string()} ({root_kind})")
    print(f"                expires {authority.root.not_valid_after_utc:%Y-%m-%d}")
    print(f"  issuing CA    {authority.intermediate.subject.rfc4514_string()}")
    print(f"                expires {authority.intermediate.not_valid_after_utc:%Y-%m-%d}")
    print(f"  trust bundle  {state.bundle_path}")
    print(f"  operator      {state.operator_id.uri} in {state.operator_dir}")
    return 0
