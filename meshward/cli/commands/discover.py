"""``meshward discover``: an inventory of the mesh and the exposure of every service.

From the config, the audit trail and the issuance ledger: each service with its identity, the
models and operations it serves, its callers and callees, its mTLS mode, the policies, DLP and
limits in force, and a finding (severity, subject, the resource that would close it) per gap.
``--json`` prints ``{"services": [...], "findings": [...]}``; ``--format md|html`` a report.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    from meshward.cli.reporting import add_report_options

    p = sub.add_parser(
        "discover",
        parents=[common],
        help="inventory: services, callers, models and exposure",
        description="List every service with its identity, models, callers and exposure, and the gaps found.",
    )
    add_report_options(p)
    p.set_defaults(func=discover)


def discover(args: argparse.Namespace) -> int:
    from meshward.cli.reporting import publish
    from meshward.review.inventory import discover as make

    return publish(args, make)
