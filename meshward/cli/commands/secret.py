"""``meshward secret set NAME`` (value on standard input) and ``meshward secret list [--json]``.

Secrets are the credentials sidecars inject on external calls (``ExternalService.spec.
credential``). The value is read from standard input — never from an argument, which would
land in shell history and ``ps`` — and stored 0600 under ``<state>/secrets``; ``list`` shows
names and dates only. Setting a secret again rotates it: sidecars pick up the new value at
their next refresh, without restarts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from meshward.cli.args import accept_state, show_usage
from meshward.cli.errors import CliError

if TYPE_CHECKING:
    from meshward.egress.secrets import SecretStore

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "secret",
        parents=[common],
        help="credentials injected on external calls",
        description="Secrets the sidecars inject into calls to external services (values never printed).",
    )
    p.set_defaults(func=show_usage(p))
    ssub = p.add_subparsers(dest="secret_command", metavar="SUBCOMMAND")
    s = ssub.add_parser(
        "set",
        help="store (or rotate) a secret, reading its value from standard input",
        description="Store NAME's value, read from standard input (one line). Rotates it if it exists.",
    )
    accept_state(s)
    s.add_argument("name", metavar="NAME")
    s.set_defaults(func=set_secret)
    ls = ssub.add_parser("list", help="names and dates of the stored secrets (never values)")
    accept_state(ls)
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=list_secrets)


def _store(args: argparse.Namespace) -> SecretStore:
    from meshward.egress.secrets import SecretStore
    from meshward.identity.state import MeshState

    state = MeshState(args.state)
    if not state.exists():
        raise CliError(f"no mesh in {args.state} (run `meshward init` first)")
    return SecretStore(state.path)


def set_secret(args: argparse.Namespace) -> int:
    from meshward.egress.secrets import SecretError

    store = _store(args)
    if sys.stdin.isatty():
        print(f"value for secret {args.name} (one line):", file=sys.stderr)
    value = sys.stdin.readline()
    try:
        info = store.set(args.name, value)
    except SecretError as exc:
        raise CliError(str(exc)) from None
    print(f"secret {info.name} stored ({info.to_json()['updated']})", file=sys.stderr)
    return 0


def list_secrets(args: argparse.Namespace) -> int:
    store = _store(args)
    items = [info.to_json() for info in store.list()]
    if args.json:
        print(json.dumps({"secrets": items}, indent=2))
        return 0
    print(f"{'NAME':<32} UPDATED")
    for item in items:
        print(f"{item['name']:<32} {item['updated']}")
    return 0
