"""``meshward proxy``: run one workload's sidecar (inbound, outbound and admin listeners).

The command line only; the process is :func:`meshward.proxy.runner.run_sidecar`. Its config
comes from a static bootstrap file (``--bootstrap``) or from the control plane (``--control``,
with ``--bundle``, ``--id`` and ``--dir``; the join token in ``$MESHWARD_TOKEN``): how
``meshward up`` and ``meshward run`` start every sidecar and gateway.
"""

from __future__ import annotations

import argparse
import logging
import os
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
        description="Run a sidecar: mTLS inbound in front of the app, HTTP proxy outbound for the app. "
        "Fed by a static bootstrap file, or by the control plane (join token in $MESHWARD_TOKEN).",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--bootstrap", type=Path, help="static bootstrap file (JSON or YAML)")
    source.add_argument("--control", metavar="URL", help="control plane URL, https://HOST:PORT")
    p.add_argument("--ready-file", type=Path, help="write the bound addresses here (JSON) once listening")
    p.add_argument("--workers", type=int, default=1, help="worker processes sharing the ports (default: 1)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    fed = p.add_argument_group("fed by the control plane (--control)")
    fed.add_argument("--bundle", type=Path, help="trust bundle to verify the control plane")
    fed.add_argument("--id", dest="identity", help="the identity, NS/SA or spiffe://...")
    fed.add_argument("--workload", help="NS/NAME of the Workload (default: the identity's NS/SA)")
    fed.add_argument("--sidecar-id", help="unique among sidecars (default: the workload)")
    fed.add_argument("--dir", type=Path, help="this sidecar's directory (SVID, config cache)")
    fed.add_argument("--parent-pid", type=int, default=0, help="exit when this process is gone")
    fed.add_argument(
        "--gateway",
        action="store_true",
        help="ingress gateway mode: listen as the Gateway resource of --workload says, route to services",
    )
    listeners = p.add_argument_group("listeners (override a bootstrap file's)")
    listeners.add_argument("--app", help="HOST:PORT of the app (none: client-only sidecar)")
    listeners.add_argument("--inbound", help="HOST:PORT (port 0: a free one)")
    listeners.add_argument("--outbound", help="HOST:PORT")
    listeners.add_argument("--admin", help="HOST:PORT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from meshward.proxy.runner import SidecarStartError, run_sidecar, sidecar_process

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        process = sidecar_process(
            bootstrap=args.bootstrap,
            control=args.control,
            bundle=args.bundle,
            identity=args.identity,
            directory=args.dir,
            workload=args.workload,
            sidecar_id=args.sidecar_id,
            token=os.environ.pop("MESHWARD_TOKEN", None),  # never on the command line
            gateway=args.gateway,
            listeners={name: getattr(args, name) for name in ("app", "inbound", "outbound", "admin")},
            ready_file=args.ready_file,
            workers=args.workers,
            parent_pid=args.parent_pid,
        )
        return run_sidecar(process)
    except SidecarStartError as exc:
        raise CliError(str(exc), exit_code=2 if exc.usage else 1) from exc
