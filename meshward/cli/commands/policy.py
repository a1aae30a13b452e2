"""``meshward policy suggest --for SERVICE.NAMESPACE``: a least-privilege AuthorizationPolicy.

Written from the traffic the service accepted in the window (``--since``, default 30d): one
rule per caller, exactly the methods, path templates, models and AI operations it used. The
YAML goes to stdout (``| meshward apply --dry-run -f -`` accepts it), preceded by comments
previewing what the observed traffic would meet once it replaces the service's own ALLOW
policies. ``--dry-run`` marks it dry run (watch first, enforce later); ``--replace`` also
prints those policies marked dry run, so applying the file enforces the suggestion alone;
``--include-denied`` learns from requests default deny refused (a service without a policy).
"""

from __future__ import annotations

import argparse

from meshward.cli.args import show_usage
from meshward.cli.errors import CliError

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    from meshward.cli.args import accept_state

    p = sub.add_parser(
        "policy",
        parents=[common],
        help="policy tools (suggest)",
        description="Policy tools: `policy suggest` writes a least-privilege policy from observed traffic.",
    )
    p.set_defaults(func=show_usage(p))
    psub = p.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    s = psub.add_parser("suggest", help="least-privilege AuthorizationPolicy from observed traffic")
    accept_state(s)
    s.add_argument("--for", dest="target", required=True, metavar="SERVICE.NAMESPACE", help="the service")
    s.add_argument("--since", default="30d", help="window length (default: %(default)s)")
    s.add_argument("--until", metavar="ISO8601", help="end of the window (default: now)")
    s.add_argument("--dry-run", action="store_true", help="mark the suggested policy dry run")
    s.add_argument(
        "--replace", action="store_true", help="also print the service's ALLOW policies as dry run"
    )
    s.add_argument("--include-denied", action="store_true", help="learn from requests default deny refused")
    s.add_argument("--json", action="store_true", help="print the suggestion and its preview as JSON")
    s.set_defaults(func=suggest)


def suggest(args: argparse.Namespace) -> int:
    import json

    import yaml

    from meshward.cli.reporting import load
    from meshward.resources.authorization import AuthorizationPolicy
    from meshward.review.access import common_labels, suggestion_for
    from meshward.review.topology import policy_name, services

    args.verify = None
    data, window = load(args)
    name, _, namespace = args.target.partition(".")
    found = [s for s in services(data) if s.name == name and (not namespace or s.namespace == namespace)]
    if len(found) != 1:
        known = ", ".join(s.ref for s in services(data)) or "none"
        what = "is ambiguous: say SERVICE.NAMESPACE" if found else "is not a service of this mesh"
        raise CliError(f"--for {args.target!r} {what} (services: {known})")
    service = found[0]
    if not common_labels(service):
        raise CliError(
            f"{service.ref}: its Workloads share no label to select them by (add e.g. app: {service.name})"
        )
    result = suggestion_for(
        data, service, data.in_window(window), dry_run=args.dry_run, include_denied=args.include_denied
    )
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    w = window.to_json()
    lines = [
        f"# Least-privilege policy for {service.ref}, from the traffic of {w['since']} to {w['until']}.",
        f"# Observed allowed requests: {result['observedAllowed']}; still allowed: {result['stillAllowed']}.",
    ]
    if result["replaces"]:
        lines.append(f"# Replaces (as dry run with --replace): {', '.join(result['replaces'])}.")
    if result["wouldDeny"]:
        lines.append("# Observed requests it would deny:")
        lines += [
            f"#   {d['identity']} {d['method']} {d['path']} ({d['requests']} request(s))"
            for d in result["wouldDeny"]
        ]
    else:
        lines.append("# It denies no observed request.")
    docs = [result["policy"]]
    if args.replace:
        for p in data.resources:
            if isinstance(p, AuthorizationPolicy) and policy_name(p) in result["replaces"]:
                doc = p.model_dump(by_alias=True, exclude_defaults=True, mode="json")
                doc.setdefault("metadata", {}).setdefault("annotations", {})["meshward.dev/dry-run"] = "true"
                doc["metadata"]["annotations"].pop("istio.io/dry-run", None)
                docs.append(doc)
    print("\n".join(lines))
    print(yaml.safe_dump_all(docs, sort_keys=False), end="")
    return 0
