"""``meshward check``: would this call be allowed? Answers without sending any traffic.

::

    meshward check --from ID --to SERVICE[.NS]|EXTERNAL-HOST --method M --path P [--header K=V ...]
                   [--model NAME] [--port N] [--source-ip IP] [--time ISO8601] [--json]
                   [-f FILE ...]

The decision is :func:`meshward.mesh.check.decide_call`: the request is prepared by the serving
sidecar's own code (same bytes in, same attributes out) and decided by the engine compiled for
each Workload that serves the service. Policies come from the mesh's current generation (through
the control plane if it runs, else the state directory's store); ``-f FILE`` lays the files'
resources over it (same kind/namespace/name replaced), or stands alone when there is no mesh in
``--state``. This module only parses the arguments and prints the answer.

``--to`` an ExternalService host (``api.llm.example``) answers for egress instead: the caller's
EgressPolicies, as its outbound sidecar decides (:mod:`meshward.egress.check`).

Exit status: 0 allowed, 1 denied (or refused by the sidecar before authorization, e.g. a
malformed path or method: printed as REJECT), 2 usage or config error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshward.cli.errors import CliError

if TYPE_CHECKING:
    from meshward.authz.attributes import AuthzDecision
    from meshward.authz.trace import RuleTrace
    from meshward.config.snapshot import WorkloadInfo
    from meshward.resources import Resource

__all__ = ["register"]

_USAGE_ERROR = 2


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "check",
        parents=[common],
        help="would a call be allowed? (no traffic is sent)",
        description="Decide a call with the mesh's authorization policies. Exit 0 allowed, 1 denied, 2 error.",
    )
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="ID",
        help="caller: ns/sa, td/ns/ns/sa/sa or spiffe://...",
    )
    p.add_argument(
        "--to", dest="target", required=True, metavar="SERVICE", help="service or service.namespace"
    )
    p.add_argument("--method", required=True, help="HTTP method (case-sensitive, as on the wire)")
    p.add_argument("--path", required=True, help="request target as the client sends it (query allowed)")
    p.add_argument("--header", action="append", default=[], metavar="K=V", help="request header (repeatable)")
    p.add_argument("--model", help="model name (when it would be in the request body)")
    p.add_argument(
        "--port", type=int, help="destination.port: the app's port (default: the Workload's port, else 80)"
    )
    p.add_argument("--source-ip", default="127.0.0.1", help="caller's address (default: %(default)s)")
    p.add_argument(
        "--time", dest="at", metavar="ISO8601", help="decide at this instant (request.time windows)"
    )
    who = p.add_mutually_exclusive_group()
    who.add_argument(
        "--jwt", type=Path, metavar="FILE", help="the end user's token, verified as the sidecar would"
    )
    who.add_argument("--claims", metavar="JSON", help="the end user's verified claims (iss, sub, aud, ...)")
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    p.add_argument(
        "-f", "--file", action="append", default=[], type=Path, metavar="FILE", help="resources (YAML)"
    )
    p.set_defaults(func=check)


def check(args: argparse.Namespace) -> int:
    from meshward.egress.check import is_external
    from meshward.mesh.check import CheckError, decide_call, load_resources

    if not args.path.startswith("/"):
        raise CliError(f"--path {args.path!r}: must start with '/' (e.g. /v1/chat/completions)", _USAGE_ERROR)
    headers = _headers(args.header)
    at = _instant(args.at)
    traces: dict[str, list[RuleTrace]] = {}
    try:
        resources, trust_domain = load_resources(args.state, args.file)
        if is_external(resources, args.target):  # an ExternalService host: the caller's egress rules
            return _check_egress(args, resources, trust_domain, headers, at)
        report, results = decide_call(
            resources,
            trust_domain,
            args.source,
            args.target,
            args.method,
            args.path,
            headers,
            model=args.model,
            port=args.port,
            source_ip=args.source_ip,
            now=at,
            jwt=args.jwt,
            claims=args.claims,
            traces=traces,
        )
    except CheckError as exc:
        raise CliError(str(exc), _USAGE_ERROR) from None
    _print(args, report, results, traces)
    return 0 if report["allowed"] else 1


def _check_egress(
    args: argparse.Namespace,
    resources: list[Resource[Any]],
    trust_domain: str | None,
    headers: list[tuple[str, str]],
    at: float,
) -> int:
    from meshward.egress.check import check_egress, print_report
    from meshward.http.errors import RemoteProtocolError
    from meshward.http.hygiene import clean_request_headers
    from meshward.http.normalize import normalize_path, split_target
    from meshward.identity.spiffe import InvalidSpiffeId, parse_identity
    from meshward.mesh.check import IDENTITY_FORMS
    from meshward.resources.mesh import Mesh, MeshSpec

    mesh = next((r.spec for r in resources if isinstance(r, Mesh)), MeshSpec())
    trust_domain = trust_domain or mesh.trust_domain
    try:
        caller = parse_identity(args.source, trust_domain)
    except InvalidSpiffeId as exc:
        raise CliError(f"--from {args.source!r}: {exc} (accepted: {IDENTITY_FORMS})", _USAGE_ERROR) from None
    try:  # the fields as the outbound sidecar sees them (repeated ones joined, cookies with "; ")
        fields = clean_request_headers([(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers], None)
    except (UnicodeEncodeError, RemoteProtocolError) as exc:
        raise CliError(f"--header: {exc}", _USAGE_ERROR) from None
    egress = check_egress(
        resources,
        mesh,
        trust_domain,
        caller,
        args.target,
        args.method,
        normalize_path(split_target(args.path)[1]),
        fields,
        args.model,
        args.port,
        at,
    )
    print_report(egress, args.json)
    return 0 if egress["allowed"] else 1


def _headers(pairs: list[str]) -> list[tuple[str, str]]:
    """``--header NAME=VALUE`` in order; a repeated name is sent repeated, as a client would."""
    headers: list[tuple[str, str]] = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise CliError(f"--header {pair!r}: expected NAME=VALUE", _USAGE_ERROR)
        headers.append((name.strip(), value))
    return headers


def _instant(text: str | None) -> float:
    if text is None:
        return time.time()
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f"--time {text!r}: expected ISO 8601, e.g. 2026-12-01T03:00:00Z", _USAGE_ERROR
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _print(
    args: argparse.Namespace,
    report: dict[str, Any],
    results: list[tuple[WorkloadInfo, AuthzDecision]],
    traces: dict[str, list[RuleTrace]] | None = None,
) -> None:
    from meshward.authz.trace import nearest

    traces = traces or {}
    if args.json:
        report["workloads"] = [
            {
                "workload": f"{w.namespace}/{w.name}",
                **d.to_json(),
                "trace": [t.to_json() for t in traces.get(f"{w.namespace}/{w.name}", [])],
            }
            for w, d in results
        ]
        print(json.dumps(report, indent=2))
        return
    verdict = {"allow": "ALLOW", "deny": "DENY", "reject": "REJECT"}[report["decision"]]
    print(
        f"{verdict}  {args.source} -> {args.target}  {args.method} {report.get('normalized_path', args.path)}"
    )
    if "reason" in report:
        print(f"  {report['reason']}")
    if report.get("model") or report.get("ai_operation") not in (None, "other"):
        print(f"  model: {report.get('model') or '-'}  operation: {report.get('ai_operation')}")
    for w, d in results:
        where = f"  {w.namespace}/{w.name}: " if len(results) > 1 else "  "
        print(f"{where}{'allowed' if d.allowed else 'denied'}: {d.reason}")
        if d.dry_run is not None:
            shadow = d.dry_run
            print(f"{where}dry run: would {'allow' if shadow.allowed else 'deny'} ({shadow.reason})")
        if d.audit:
            print(f"{where}audit: {', '.join(d.audit)}")
        if not d.allowed and d.action != "DENY":
            for t in nearest(traces.get(f"{w.namespace}/{w.name}", [])):
                print(f"{where}nearest: {t.policy} rules[{t.rule}] failed {', '.join(t.failed)}")
