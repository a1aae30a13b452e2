"""``meshward proxy``: run one workload's sidecar (inbound, outbound and admin listeners)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from meshward.cli.errors import CliError

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "proxy",
        parents=[common],
        help="run a sidecar (the data plane of one workload)",
        description="Run a sidecar: mTLS inbound in front of the app, HTTP proxy outbound for the app.",
    )
    p.add_argument("--bootstrap", type=Path, required=True, help="static bootstrap file (JSON or YAML)")
    p.add_argument("--ready-file", type=Path, help="write the bound addresses here (JSON) once listening")
    p.add_argument("--workers", type=int, default=1, help="worker processes sharing the ports (default: 1)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from meshward.proxy.bootstrap import BootstrapError, load_bootstrap
    from meshward.proxy.compiled import SnapshotRejected
    from meshward.proxy.runner import run_bootstrap
    from meshward.tls.identity import IdentityError

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not 1 <= args.workers <= 64:
        raise CliError("--workers must be between 1 and 64")
    try:
        boot = load_bootstrap(args.bootstrap)
        return run_bootstrap(boot, args.ready_file, args.workers)
    except (BootstrapError, IdentityError, SnapshotRejected) as exc:
        raise CliError(str(exc)) from exc
