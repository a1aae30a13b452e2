"""``meshward endpoints``: the sidecar endpoints registered with the control plane, and removal.

- ``meshward endpoints [list] [--json]``: every registration (sidecar, workload, identity,
  inbound ``HOST:PORT``) and whether the services table uses it (an invalid one is skipped and
  named here with the reason).
- ``meshward endpoints remove SIDECAR [--json]``: forget one registration; every sidecar gets a
  snapshot without it. A sidecar that is still running registers again when it restarts.

Through the running control plane (as the operator) if there is one, else on the store directly.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from meshward.cli.args import accept_state
from meshward.cli.errors import CliError

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "endpoints",
        parents=[common],
        help="list or remove sidecar registrations",
        description="The inbound endpoints sidecars registered (valid or not); remove a registration.",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=list_endpoints)
    esub = p.add_subparsers(dest="endpoints_command", metavar="SUBCOMMAND")

    ls = esub.add_parser("list", help="registered sidecar endpoints (default)")
    accept_state(ls)
    ls.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    ls.set_defaults(func=list_endpoints)

    rm = esub.add_parser("remove", help="forget one sidecar's registration")
    accept_state(rm)
    rm.add_argument("sidecar", help="the SIDECAR id as `meshward endpoints` shows it")
    rm.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    rm.set_defaults(func=remove_endpoint)


def _call(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The control plane's answer, or the same answer computed on the store when none runs."""
    from meshward.config.store import ConfigStore
    from meshward.control.client import ControlRefused, ControlUnavailable, operator_client
    from meshward.control.endpoints import UnknownSidecar, endpoint_rows, remove_registration
    from meshward.identity.state import MeshState

    state = MeshState(args.state)
    client = operator_client(state)
    if client is not None:
        with client:
            try:
                return client.request(method, path, body)[1]
            except ControlRefused as exc:
                raise CliError(str(exc)) from None
            except ControlUnavailable as exc:
                raise CliError(str(exc)) from None
    store = ConfigStore(state.db_path, state.trust_domain)
    if body is None:
        return {"endpoints": endpoint_rows(store)}
    try:
        remove_registration(store, str(body["sidecar"]))
    except UnknownSidecar as exc:
        raise CliError(str(exc)) from None
    return {"removed": body["sidecar"]}


def list_endpoints(args: argparse.Namespace) -> int:
    rows = _call(args, "GET", "/v1/endpoints")["endpoints"]
    if getattr(args, "json", False):
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    if not rows:
        print("no sidecar endpoints registered")
        return 0
    width = max(len(str(r["sidecar"])) for r in rows)
    print(f"{'SIDECAR':<{width}}  {'INBOUND':<24}  {'STATUS':<8}  IDENTITY")
    for r in rows:
        status = "valid" if r["valid"] else "SKIPPED"
        print(f"{r['sidecar']:<{width}}  {r['inbound'][:24]:<24}  {status:<8}  {r['identity']}")
        if r["problem"]:
            print(f"{'':<{width}}  ↳ {r['problem']}")
    return 0


def remove_endpoint(args: argparse.Namespace) -> int:
    result = _call(args, "POST", "/v1/endpoints/remove", {"sidecar": args.sidecar})
    if getattr(args, "json", False):
        json.dump(result, sys.stdout)
        print()
    else:
        print(f"removed {result['removed']}")
    return 0
