"""``meshward apikey create|list|revoke|rotate``: API keys for callers with no identity provider.

A key is printed once (``create``, ``rotate``); the mesh stores only its SHA-256 as an
``ApiKey`` resource in the root namespace, so creating, revoking and rotating are config
generations like any other change (in ``history``, audited, pushed to every sidecar and gateway):
a revoked key stops working within one generation. A key stands for a request principal
(``apikeys/NAME`` unless ``--principal`` says otherwise), which policies name in
``requestPrincipals`` and rate limits key on with ``request.auth.principal``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from meshward.cli.args import accept_state, duration_arg, show_usage
from meshward.cli.errors import CliError

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "apikey",
        parents=[common],
        help="API keys for outside callers (shown once, stored hashed)",
        description="Create, list, revoke and rotate API keys; a key maps to a request principal.",
    )
    p.set_defaults(func=show_usage(p))
    ksub = p.add_subparsers(dest="apikey_command", metavar="SUBCOMMAND")
    c = ksub.add_parser("create", help="make a key and print it once")
    accept_state(c)
    c.add_argument("--name", required=True, help="the key's name (lower-case letters, digits, '-')")
    c.add_argument("--expires", help="lifetime, e.g. 30d (default: no expiry)")
    c.add_argument("--principal", help="the request principal it stands for (default: apikeys/NAME)")
    c.add_argument("--json", action="store_true", help='print {"name", "key", "principal", "expires"}')
    c.set_defaults(func=create)
    ls = ksub.add_parser("list", help="the keys: names, principals, dates (never the keys)")
    accept_state(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=list_keys)
    r = ksub.add_parser("revoke", help="stop a key (a new generation)")
    accept_state(r)
    r.add_argument("name")
    r.set_defaults(func=revoke)
    rot = ksub.add_parser("rotate", help="replace a key's secret; the old one stops working")
    accept_state(rot)
    rot.add_argument("name")
    rot.add_argument("--json", action="store_true")
    rot.set_defaults(func=rotate)


def _access(args: argparse.Namespace) -> Any:
    from meshward.control.operations import config_access
    from meshward.identity.state import MeshState

    return config_access(MeshState(args.state))


def _root_namespace(access: Any) -> str:
    items = access.get("Mesh", None, None).get("items", [])
    if items:
        return str(items[0].get("spec", {}).get("rootNamespace") or "meshward-system")
    return "meshward-system"


def _keys(access: Any) -> list[dict[str, Any]]:
    ns = _root_namespace(access)
    items = access.get("ApiKey", None, ns).get("items", [])
    return [i for i in items if i.get("metadata", {}).get("namespace") == ns]


def _find(access: Any, name: str) -> dict[str, Any]:
    for item in _keys(access):
        if item["metadata"]["name"] == name:
            return item
    raise CliError(f"no API key {name!r} (see `meshward apikey list`)")


def _apply(access: Any, doc: dict[str, Any]) -> dict[str, Any]:
    from meshward.control.operations import ConfigError

    try:
        result: dict[str, Any] = access.apply(json.dumps(doc), "<apikey>", False)
    except ConfigError as exc:
        raise CliError(exc.problems[0] if exc.problems else str(exc)) from None
    return result


def _doc(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "meshward.dev/v1alpha1",
        "kind": "ApiKey",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _show(args: argparse.Namespace, name: str, key: str, spec: dict[str, Any], generation: Any) -> None:
    if args.json:
        print(
            json.dumps(
                {"name": name, "key": key, "principal": spec["principal"], "expires": spec.get("expires")}
            )
        )
    else:
        print(key)
        print(
            f"API key {name} for principal {spec['principal']} (generation {generation}); "
            "it is shown only now: store it safely",
            file=sys.stderr,
        )


def create(args: argparse.Namespace) -> int:
    from meshward.authn.apikeys import default_principal, hash_key, new_key

    access = _access(args)
    if any(item["metadata"]["name"] == args.name for item in _keys(access)):
        raise CliError(f"API key {args.name!r} exists (rotate it with `meshward apikey rotate {args.name}`)")
    key = new_key()
    now = _now()
    spec: dict[str, Any] = {
        "sha256": hash_key(key),
        "principal": args.principal or default_principal(args.name),
        "created": now.isoformat().replace("+00:00", "Z"),
    }
    if args.expires:
        spec["expires"] = (now + duration_arg(args.expires, "--expires")).isoformat().replace("+00:00", "Z")
    result = _apply(access, _doc(args.name, _root_namespace(access), spec))
    _show(args, args.name, key, spec, result.get("generation"))
    return 0


def rotate(args: argparse.Namespace) -> int:
    from meshward.authn.apikeys import hash_key, new_key

    access = _access(args)
    item = _find(access, args.name)
    key = new_key()
    spec = dict(
        item["spec"], sha256=hash_key(key), revoked=False, created=_now().isoformat().replace("+00:00", "Z")
    )
    result = _apply(access, _doc(args.name, item["metadata"]["namespace"], spec))
    _show(args, args.name, key, spec, result.get("generation"))
    return 0


def revoke(args: argparse.Namespace) -> int:
    access = _access(args)
    item = _find(access, args.name)
    spec = dict(item["spec"], revoked=True)
    result = _apply(access, _doc(args.name, item["metadata"]["namespace"], spec))
    print(f"API key {args.name} revoked (generation {result.get('generation')})", file=sys.stderr)
    return 0


def list_keys(args: argparse.Namespace) -> int:
    rows = [
        {
            "name": i["metadata"]["name"],
            "principal": i["spec"]["principal"],
            "created": i["spec"].get("created"),
            "expires": i["spec"].get("expires"),
            "revoked": bool(i["spec"].get("revoked")),
        }
        for i in sorted(_keys(_access(args)), key=lambda i: str(i["metadata"]["name"]))
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no API keys (create one with `meshward apikey create --name NAME`)")
        return 0
    from meshward.mesh.status import align_columns

    table = [("NAME", "PRINCIPAL", "CREATED", "EXPIRES", "STATE")]
    for r in rows:
        state = "revoked" if r["revoked"] else "active"
        table.append((r["name"], r["principal"], r["created"] or "-", r["expires"] or "-", state))
    print("\n".join(align_columns(table)))
    return 0
