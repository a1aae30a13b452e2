"""``meshward rollout status|promote|pause|resume|abort SERVICE [--json]``: canary rollouts.

``status`` shows the rollout of the service's ``ModelRoute``: state, step, canary weight, each
check's value against its limit, why it rolled back, and its history. The other actions are
the operator's: promote now (all traffic to the canary), pause / resume the analysis, abort
(all traffic back to stable). They need the running control plane (``meshward up`` or
``meshward control``), which runs the analysis.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from meshward.cli.errors import CliError

__all__ = ["ACTIONS", "register", "render_status"]

ACTIONS = ("status", "promote", "pause", "resume", "abort")


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "rollout",
        parents=[common],
        help="show or steer a canary rollout",
        description="A ModelRoute's automated canary rollout: status, promote, pause, resume, abort.",
    )
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("service", metavar="SERVICE", help="the routed service (NAME or NAMESPACE/NAME)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=rollout)


def rollout(args: argparse.Namespace) -> int:
    from meshward.control.client import ControlRefused, ControlUnavailable, operator_client
    from meshward.identity.state import MeshState

    client = operator_client(MeshState(args.state))
    if client is None:
        raise CliError("no control plane is running for this state directory (start one with `meshward up`)")
    try:
        if args.action == "status":
            from urllib.parse import urlencode

            doc = client.request("GET", f"/v1/rollout/status?{urlencode({'service': args.service})}")[1]
        else:
            doc = client.request("POST", f"/v1/rollout/{args.action}", {"service": args.service})[1]
    except (ControlRefused, ControlUnavailable) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(render_status(doc))
    return 0


def _value(v: Any) -> str:
    return "-" if v is None else f"{v:g}" if isinstance(v, float | int) else str(v)


def render_status(doc: dict[str, Any]) -> str:
    steps = doc.get("steps") or []
    lines = [
        f"ROUTE     {doc['route']} (service {doc['service']})",
        f"STATE     {doc['state']}",
        f"STEP      {doc['step']} of {len(steps)}  (steps {', '.join(map(str, steps))}; interval "
        f"{doc.get('interval')}; threshold {doc.get('threshold')}; failed checks {doc.get('failed', 0)})",
        f"WEIGHT    canary {doc['weight']}%, stable {100 - int(doc['weight'])}%",
    ]
    if doc.get("reason"):
        lines.append(f"REASON    {doc['reason']}")
    checks = doc.get("checks") or []
    if checks:
        lines.append("")
        lines.append(f"{'CHECK':<18} {'VALUE':>10} {'LIMIT':>12}  OK")
        for c in checks:
            op = ">=" if c.get("op") == "min" else "<="
            ok = {True: "yes", False: "NO", None: "no data"}[c.get("ok")]
            lines.append(
                f"{c['metric']:<18} {_value(c.get('value')):>10} {op + ' ' + _value(c['limit']):>12}  {ok}"
            )
    history = doc.get("history") or []
    if history:
        lines.append("")
        lines.append(f"{'AT':<21} {'EVENT':<12} {'WEIGHT':>6} {'GEN':>4}  REASON")
        for h in history[-20:]:
            at = dt.datetime.fromtimestamp(h["time"], dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            gen = h.get("generation")
            lines.append(
                f"{at:<21} {h['event']:<12} {h['weight']:>6} {'-' if gen is None else gen:>4}  {h.get('reason', '')}"
            )
    return "\n".join(lines)
