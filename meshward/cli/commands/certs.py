"""``meshward certs``: the SVIDs the authority issued, and minting one for an outside client.

- ``meshward certs [list] [--id ID] [--json]``: identity, serial, not-after, revoked or not.
- ``meshward certs issue --id NS/NAME --out DIR [--ttl 1h]``: writes ``key.pem`` (0600),
  ``cert.pem`` (leaf + intermediate) and ``bundle.pem`` for a client outside the mesh.
- ``meshward certs revoke SERIAL`` or ``--id NS/NAME`` (every unexpired SVID of that identity):
  renewals are refused from now on, and handshakes too once the control plane has pushed the
  revoked serials to the sidecars (within a few seconds while it runs).
- ``meshward certs refusals [--json]``: the requests the authority refused, and why.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from meshward.cli.args import accept_state, duration_arg
from meshward.cli.errors import CliError

if TYPE_CHECKING:
    from meshward.identity.issuance import IdentityService

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "certs",
        parents=[common],
        help="list issued certificates or mint one",
        description="List the certificates the CA issued, issue one to a directory, revoke one, list refusals.",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--id", dest="identity", help="only this identity")
    p.set_defaults(func=list_certs)
    csub = p.add_subparsers(dest="certs_command", metavar="SUBCOMMAND")

    ls = csub.add_parser("list", help="issued certificates (default)")
    accept_state(ls)
    ls.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    ls.add_argument("--id", dest="identity", default=argparse.SUPPRESS, help="only this identity")
    ls.set_defaults(func=list_certs)

    issue = csub.add_parser("issue", help="mint a key + SVID + bundle into a directory")
    accept_state(issue)
    issue.add_argument(
        "--id", dest="identity", required=True, help="NS/NAME, TD/ns/NS/sa/NAME or spiffe://..."
    )
    issue.add_argument("--out", type=Path, required=True, help="directory for key.pem, cert.pem, bundle.pem")
    issue.add_argument("--ttl", default="1h", help="certificate lifetime, at most 24h (default: %(default)s)")
    issue.set_defaults(func=issue_cert)

    revoke = csub.add_parser("revoke", help="refuse this certificate (or an identity's) from now on")
    accept_state(revoke)
    revoke.add_argument("serial", nargs="?", help="hex serial as `meshward certs` shows it")
    revoke.add_argument("--id", dest="identity", help="revoke every unexpired SVID of this identity")
    revoke.add_argument("--json", action="store_true", help="print JSON")
    revoke.set_defaults(func=revoke_cert)

    refusals = csub.add_parser("refusals", help="requests the authority refused")
    accept_state(refusals)
    refusals.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    refusals.set_defaults(func=list_refusals)


def _service(args: argparse.Namespace) -> IdentityService:
    from meshward.identity.issuance import IdentityService
    from meshward.identity.state import MeshState

    return IdentityService(MeshState(args.state))


def list_certs(args: argparse.Namespace) -> int:
    from meshward.identity.ledger import iso
    from meshward.identity.spiffe import InvalidSpiffeId

    with contextlib.closing(_service(args)) as service:
        try:
            records = service.certificates(args.identity)
        except InvalidSpiffeId as exc:
            raise CliError(str(exc)) from None
    now = iso(dt.datetime.now(dt.UTC))
    rows = [{**asdict(r), "expired": r.not_after <= now} for r in records]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    if not rows:
        print("no certificates issued yet")
        return 0
    width = max(len(str(r["identity"])) for r in rows)
    print(f"{'IDENTITY':<{width}}  {'SERIAL':<40}  {'NOT AFTER':<20}  {'STATUS':<8}  VIA")
    for r in rows:
        status = "revoked" if r["revoked"] else "expired" if r["expired"] else "valid"
        print(f"{r['identity']:<{width}}  {r['serial']:<40}  {r['not_after']:<20}  {status:<8}  {r['via']}")
    return 0


def issue_cert(args: argparse.Namespace) -> int:
    from meshward.identity.authority import MAX_SVID_TTL
    from meshward.identity.ledger import iso
    from meshward.identity.spiffe import InvalidSpiffeId

    ttl = duration_arg(args.ttl, "--ttl")
    if ttl > MAX_SVID_TTL:
        raise CliError("--ttl: an SVID lives at most 24h")
    with contextlib.closing(_service(args)) as service:
        try:
            svid = service.mint(args.identity, args.out, ttl)
        except InvalidSpiffeId as exc:
            raise CliError(str(exc)) from None
    print(f"issued {svid.spiffe_id.uri} serial {svid.serial}, valid until {iso(svid.not_after)}")
    print(f"  {args.out / 'cert.pem'}    certificate chain (leaf + intermediate)")
    print(f"  {args.out / 'key.pem'}     private key (0600)")
    print(f"  {args.out / 'bundle.pem'}  trust bundle")
    return 0


def revoke_cert(args: argparse.Namespace) -> int:
    from meshward.identity.spiffe import InvalidSpiffeId

    if (args.serial is None) == (args.identity is None):
        raise CliError("give either a SERIAL or --id NS/NAME")
    with contextlib.closing(_service(args)) as service:
        if args.identity is not None:
            try:
                serials = service.revoke_identity(args.identity)
            except InvalidSpiffeId as exc:
                raise CliError(str(exc)) from None
            if not serials:
                raise CliError(f"no unexpired, unrevoked certificate of {args.identity}")
        elif service.revoke(args.serial):
            serials = [args.serial]
        else:
            raise CliError(f"no unrevoked certificate with serial {args.serial}")
    if args.json:
        json.dump({"revoked": serials}, sys.stdout)
        print()
    else:
        for serial in serials:
            print(f"revoked {serial}")
    return 0


def list_refusals(args: argparse.Namespace) -> int:
    with contextlib.closing(_service(args)) as service:
        records = service.refusals()
    if getattr(args, "json", False):
        json.dump([asdict(r) for r in records], sys.stdout, indent=2)
        print()
        return 0
    if not records:
        print("no refusals")
    for r in records:
        print(f"{r.at}  {r.via:<6}  {r.claimed_identity or '-'}  {r.reason}")
    return 0
