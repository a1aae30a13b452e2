"""``meshward usage [--since 1d] [--by identity|model] [--prices FILE] [--json]``: token spend.

Every AI call that used tokens is in the audit trail (metering is always on, with or without a
RateLimitPolicy); this sums them per calling identity or per model, priced with
``Mesh.spec.pricing`` of the current generation or ``--prices FILE`` (a YAML list of
``{model, inputPerMillion, outputPerMillion, currency}``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshward.cli.errors import CliError

if TYPE_CHECKING:
    from meshward.resources.mesh import ModelPrice

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "usage",
        parents=[common],
        help="token usage and spend per identity or model",
        description="Sum the tokens of every AI call in the audit trail per caller or model, "
        "priced with Mesh spec.pricing or --prices FILE.",
    )
    p.add_argument("--since", default="1d", help="how far back (e.g. 30m, 12h, 7d; default %(default)s)")
    p.add_argument(
        "--by", choices=("identity", "model"), default="identity", help="group by (default: %(default)s)"
    )
    p.add_argument(
        "--prices", type=Path, metavar="FILE", help="price table (YAML list), instead of Mesh spec.pricing"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=usage)


def _prices(args: argparse.Namespace) -> list[ModelPrice]:
    import yaml
    from pydantic import ValidationError

    from meshward.control.operations import ConfigError, config_access
    from meshward.identity.state import MeshState
    from meshward.resources.mesh import MeshSpec, ModelPrice

    if args.prices is not None:
        try:
            items = yaml.safe_load(args.prices.read_text(encoding="utf-8")) or []
            return [ModelPrice.model_validate(item) for item in items]
        except OSError as exc:
            raise CliError(f"cannot read {args.prices}: {exc.strerror or exc}") from None
        except (yaml.YAMLError, ValidationError, TypeError) as exc:
            raise CliError(f"{args.prices}: not a price table: {str(exc).splitlines()[0]}") from None
    try:
        meshes = config_access(MeshState(args.state)).get("Mesh", None, None)["items"]
    except ConfigError:
        return []
    return MeshSpec.model_validate(meshes[0]["spec"]).pricing if meshes else []


def usage(args: argparse.Namespace) -> int:
    from meshward.cli.args import duration_arg
    from meshward.cli.commands.audit import _all_entries, _audit_dir
    from meshward.metering.spend import call_of_event, summarize

    window = duration_arg(args.since, "--since")
    since_ms = int((time.time() - window.total_seconds()) * 1000)
    prices = _prices(args)
    calls = [c for _, _, record in _all_entries(_audit_dir(args)) if (c := call_of_event(record.event))]
    rows = summarize(calls, args.by, prices, since_ms)
    if args.json:
        doc: dict[str, Any] = {"since": args.since, "by": args.by, "rows": [r.to_json() for r in rows]}
        print(json.dumps(doc, indent=2))
        return 0
    if not rows:
        print(f"no AI calls with token usage in the last {args.since}")
        return 0
    from meshward.mesh.status import align_columns

    table = [(args.by.upper(), "REQUESTS", "INPUT", "OUTPUT", "TOTAL", "COST")]
    for r in rows:
        cost = "-" if r.cost is None else f"{r.cost:.6f} {r.currency}"
        table.append((r.key, str(r.requests), str(r.input), str(r.output), str(r.total), cost))
    print("\n".join(align_columns(table)))
    return 0
