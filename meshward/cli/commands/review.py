"""``meshward review [--since 30d]``: an access review of the policies against real traffic.

Rule use, unused grants, broad rules, shadowed policies and DENYs that never fire; identities
and stale ones; denials by identity; dry-run policies that would have denied; least-privilege
suggestions; DLP findings and alerts; certificate and CA expiry; a compliance mapping.
``--json`` prints the document (``unusedGrants``, ``staleIdentities``, ``broadRules``,
``shadowedPolicies``, ``denials``, ...), signed with the audit checkpoint key.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    from meshward.cli.reporting import add_report_options

    p = sub.add_parser(
        "review",
        parents=[common],
        help="access review: policies against observed traffic",
        description="Review every policy and identity against the traffic of the window.",
    )
    add_report_options(p)
    p.set_defaults(func=review)


def review(args: argparse.Namespace) -> int:
    from meshward.cli.reporting import publish
    from meshward.review.access import review as make
    from meshward.review.sources import audit_signed

    signed = audit_signed(args.state)
    return publish(args, lambda data, window: make(data, window, signed_audit=signed))
