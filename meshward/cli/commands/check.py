"""``meshward check``: would this call be allowed? Answers without sending any traffic.

::

    meshward check --from ID --to SERVICE[.NS]|EXTERNAL-HOST --method M --path P [--header K=V ...]
                   [--model NAME] [--port N] [--source-ip IP] [--time ISO8601] [--json]
                   [-f FILE ...]

The request is prepared exactly as the serving sidecar prepares it — the same strict head
parser (:mod:`meshward.http.parser`: e.g. a lower-case method is a 400 before any policy),
target split and path normalization (:mod:`meshward.http.normalize`), the same AI classification
(:mod:`meshward.ai.protocol`) — and decided by the same engine (:mod:`meshward.authz.engine`)
compiled for each Workload that serves the service. Policies come from the mesh's current
generation (through the control plane if it runs, else the state directory's store);
``-f FILE`` lays the files' resources over it (same kind/namespace/name replaced), or stands
alone when there is no mesh in ``--state``.

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
    from meshward.authn.enduser import EndUser
    from meshward.authz.attributes import AuthzDecision
    from meshward.authz.trace import RuleTrace
    from meshward.config.snapshot import WorkloadInfo
    from meshward.resources import Resource
    from meshward.resources.mesh import Workload

__all__ = ["decide_call", "load_resources", "register"]

_USAGE_ERROR = 2
_IDENTITY_FORMS = "NS/SA, TRUST-DOMAIN/ns/NS/sa/SA, spiffe://TRUST-DOMAIN/ns/NS/sa/SA"


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

    if not args.path.startswith("/"):
        raise CliError(f"--path {args.path!r}: must start with '/' (e.g. /v1/chat/completions)", _USAGE_ERROR)
    resources, trust_domain = load_resources(args.state, args.file)
    if is_external(resources, args.target):  # an ExternalService host: the caller's egress rules
        return _check_egress(args, resources, trust_domain)
    traces: dict[str, list[RuleTrace]] = {}
    report, results = decide_call(
        resources,
        trust_domain,
        args.source,
        args.target,
        args.method,
        args.path,
        _headers(args.header),
        model=args.model,
        port=args.port,
        source_ip=args.source_ip,
        now=_instant(args.at),
        jwt=args.jwt,
        claims=args.claims,
        traces=traces,
    )
    _print(args, report, results, traces)
    return 0 if report["allowed"] else 1


def _check_egress(args: argparse.Namespace, resources: list[Resource[Any]], trust_domain: str | None) -> int:
    from meshward.egress.check import check_egress, print_report
    from meshward.http.normalize import normalize_path, split_target
    from meshward.identity.spiffe import InvalidSpiffeId, parse_identity
    from meshward.resources.mesh import Mesh, MeshSpec

    mesh = next((r.spec for r in resources if isinstance(r, Mesh)), MeshSpec())
    trust_domain = trust_domain or mesh.trust_domain
    try:
        caller = parse_identity(args.source, trust_domain)
    except InvalidSpiffeId as exc:
        raise CliError(f"--from {args.source!r}: {exc} (accepted: {_IDENTITY_FORMS})", _USAGE_ERROR) from None
    egress = check_egress(
        resources,
        mesh,
        trust_domain,
        caller,
        args.target,
        args.method,
        normalize_path(split_target(args.path)[1]),
        _headers(args.header),
        args.model,
        args.port,
        _instant(args.at),
    )
    print_report(egress, args.json)
    return 0 if egress["allowed"] else 1


def decide_call(
    resources: list[Resource[Any]],
    trust_domain: str | None,
    source: str,
    target: str,
    method: str,
    target_path: str,
    headers: dict[str, str],
    model: str | None = None,
    port: int | None = None,
    source_ip: str = "127.0.0.1",
    now: float | None = None,
    jwt: Path | None = None,
    claims: str | None = None,
    traces: dict[str, list[RuleTrace]] | None = None,
) -> tuple[dict[str, Any], list[tuple[WorkloadInfo, AuthzDecision]]]:
    """Decide one call as the serving sidecars would: the report ``check --json`` prints (without
    ``workloads``) and each serving Workload's decision. Also the dashboard's access matrix.
    ``traces``, when given, receives each workload's per-rule trace (what failed in each rule)."""
    from meshward.ai.protocol import classify
    from meshward.authz.aliases import resolve_aliases
    from meshward.authz.attributes import RequestAttributes
    from meshward.authz.engine import compile_engine, select_policies
    from meshward.authz.trace import trace_policies
    from meshward.config.snapshot import WorkloadInfo
    from meshward.filters.authz import end_user_attributes
    from meshward.http.errors import RemoteProtocolError
    from meshward.http.normalize import normalize_path, split_target
    from meshward.identity.spiffe import InvalidSpiffeId, SpiffeId, parse_identity
    from meshward.resources.authorization import AuthorizationPolicy
    from meshward.resources.mesh import Mesh, MeshSpec

    mesh = next((r.spec for r in resources if isinstance(r, Mesh)), MeshSpec())
    trust_domain = trust_domain or mesh.trust_domain
    try:
        caller = parse_identity(source, trust_domain)
    except InvalidSpiffeId as exc:
        raise CliError(f"--from {source!r}: {exc} (accepted: {_IDENTITY_FORMS})", _USAGE_ERROR) from None
    workloads = _serving(resources, target)
    now = time.time() if now is None else now
    report: dict[str, Any] = {"from": caller.uri, "to": target, "method": method, "path": target_path}
    if caller.trust_domain != trust_domain:
        if caller.trust_domain not in mesh.trust_domain_aliases:
            reason = (
                f"the sidecar refuses callers outside trust domain {trust_domain!r} "
                f"(this one is in {caller.trust_domain!r}; see Mesh spec.trustDomainAliases)"
            )
            report.update({"allowed": False, "decision": "reject", "reason": reason})
            return report, []
        caller = SpiffeId(trust_domain, caller.namespace, caller.service_account)  # an alias: the same
        report["from"] = caller.uri
    try:
        _parse_head(method, target_path, headers.get("host") or _default_host(workloads[0]), headers)
        _, path, _query = split_target(target_path)
        path = normalize_path(path, mesh.path_normalization.encoded_slashes)
    except RemoteProtocolError as exc:
        hint = ""
        if method != method.upper():
            hint = f" (methods are case-sensitive: write {method.upper()!r})"
        report.update(
            {"allowed": False, "decision": "reject", "reason": f"400 from the sidecar: {exc}{hint}"}
        )
        return report, []
    report["normalized_path"] = path
    ai = classify(method, path, headers, None)
    if model:
        ai.model = model
    report.update({"model": ai.model, "ai_operation": ai.operation, "ai_protocol": ai.protocol})
    results: list[tuple[WorkloadInfo, AuthzDecision]] = []
    for w in workloads:
        info = WorkloadInfo(
            w.metadata.name, w.metadata.namespace, w.service, w.service_account, dict(w.metadata.labels)
        )
        host = headers.get("host") or _default_host(w)
        engine = compile_engine(
            resources,
            info,
            trust_domain=trust_domain,
            root_namespace=mesh.root_namespace,
            default_policy=mesh.default_policy,
            trust_domain_aliases=mesh.trust_domain_aliases,
        )
        try:
            user = _end_user(jwt, claims, resources, info, mesh.root_namespace, now)
        except ValueError as exc:
            report.update({"allowed": False, "decision": "reject", "reason": f"401 from the sidecar: {exc}"})
            return report, []
        if user is not None:
            report["request_principal"] = user.principal
        attrs = RequestAttributes(
            method=method,
            path=path,
            host=host,
            port=_port(port, w),
            principal=caller.principal,
            namespace=caller.namespace,
            source_ip=source_ip,
            headers={**headers, "host": host},  # as the sidecar sees them: Host included
            model=ai.model,
            operation=ai.operation,
            now=now,
            **end_user_attributes(user),
        )
        results.append((info, engine.evaluate(attrs)))
        if traces is not None:
            chosen = select_policies(resources, info, mesh.root_namespace, AuthorizationPolicy)
            policies = [resolve_aliases(p, trust_domain, mesh.trust_domain_aliases) for p in chosen]
            traces[f"{info.namespace}/{info.name}"] = trace_policies(policies, trust_domain, attrs)
    allowed = all(d.allowed for _, d in results)
    report.update({"allowed": allowed, "decision": "allow" if allowed else "deny"})
    return report, results


def load_resources(state: Path, files: list[Path]) -> tuple[list[Resource[Any]], str | None]:
    """The current config (if a mesh exists in ``state``) with ``files`` laid over it."""
    from meshward.control.operations import ConfigError, config_access
    from meshward.identity.state import MeshState, MeshStateError
    from meshward.resources import KINDS
    from meshward.resources.loader import LoadError, load_file

    base: list[Resource[Any]] = []
    trust_domain: str | None = None
    mesh_state = MeshState(state)
    if mesh_state.exists():
        try:
            trust_domain = mesh_state.trust_domain
            access = config_access(mesh_state)
            for kind in (
                "Mesh",
                "Workload",
                "AuthorizationPolicy",
                "Gateway",
                "RequestAuthentication",
                "ExternalService",
                "EgressPolicy",
            ):
                base.extend(KINDS[kind].model_validate(doc) for doc in access.get(kind, None, None)["items"])
        except (ConfigError, MeshStateError) as exc:
            raise CliError(f"cannot read the mesh's config: {exc}", _USAGE_ERROR) from None
    elif not files:
        raise CliError(f"no mesh in {state} and no -f FILE: nothing to check against", _USAGE_ERROR)
    overlay: dict[tuple[str, str, str], Resource[Any]] = {r.key: r for r in base}
    for path in files:
        try:
            for r in load_file(path):
                overlay[r.key] = r
        except LoadError as exc:
            raise CliError(str(exc), _USAGE_ERROR) from None
    return list(overlay.values()), trust_domain


def _serving(resources: list[Resource[Any]], target: str) -> list[Workload]:
    from meshward.resources.gateway import Gateway
    from meshward.resources.mesh import Workload

    service, _, namespace = target.partition(".")
    workloads = [r for r in resources if isinstance(r, Workload)]
    workloads += [  # a gateway is checked like the workload it is (its labels select its policies)
        Workload.model_validate(
            {"apiVersion": r.api_version, "kind": "Workload", "metadata": r.metadata, "spec": {}}
        )
        for r in resources
        if isinstance(r, Gateway)
    ]
    found = [
        w for w in workloads if w.service == service and (not namespace or w.metadata.namespace == namespace)
    ]
    if not found:
        known = ", ".join(sorted({f"{w.service}.{w.metadata.namespace}" for w in workloads})) or "none"
        raise CliError(f"no Workload serves {target!r} (services: {known})", _USAGE_ERROR)
    if not namespace and len({w.metadata.namespace for w in found}) > 1:
        spaces = ", ".join(sorted({f"{service}.{w.metadata.namespace}" for w in found}))
        raise CliError(f"{service!r} is ambiguous: say which namespace ({spaces})", _USAGE_ERROR)
    return sorted(found, key=lambda w: w.metadata.name)


def _end_user(
    jwt: Path | None,
    claims_json: str | None,
    resources: list[Resource[Any]],
    info: WorkloadInfo,
    root_namespace: str,
    now: float,
) -> EndUser | None:
    """``--claims``: taken as verified; ``--jwt``: verified with the RequestAuthentication rules
    that select the workload (keys fetched from ``jwksUri`` as the sidecar would). Raises
    ValueError with the reason a sidecar would answer 401."""
    from meshward.authn.enduser import EndUser
    from meshward.authn.jwt import IssuerKeys, JwtVerifier, TokenRefused, keys_from_jwks
    from meshward.authz.engine import select_policies
    from meshward.resources.authentication import RequestAuthentication

    if claims_json is not None:
        try:
            claims = json.loads(claims_json)
        except ValueError as exc:
            raise CliError(f"--claims: not JSON: {exc}", _USAGE_ERROR) from None
        if not isinstance(claims, dict) or not isinstance(claims.get("iss"), str):
            raise CliError('--claims: a JSON object with at least "iss" and "sub"', _USAGE_ERROR)
        aud = claims.get("aud")
        audiences = (aud,) if isinstance(aud, str) else tuple(a for a in aud or [] if isinstance(a, str))
        azp = claims.get("azp")
        return EndUser(
            f"{claims['iss']}/{claims.get('sub', '')}",
            "jwt",
            audiences,
            azp if isinstance(azp, str) else None,
            claims,
        )
    if jwt is None:
        return None
    try:
        token = jwt.read_text().strip()
    except OSError as exc:
        raise CliError(f"cannot read {jwt}: {exc.strerror}", _USAGE_ERROR) from None
    policies = select_policies(resources, info, root_namespace, RequestAuthentication)
    issuers = []
    for rule in (r for p in policies for r in p.spec.jwt_rules):
        if rule.jwks is not None:
            keys = keys_from_jwks(rule.jwks)
        else:
            from meshward.authn.jwks import RemoteKeySet

            remote = RemoteKeySet(str(rule.jwks_uri))
            remote.fetch()
            keys = remote.keys
        issuers.append(IssuerKeys(rule.issuer, tuple(rule.audiences), keys))
    try:
        claims_ = JwtVerifier(issuers).verify(token, now)
    except TokenRefused as exc:
        raise ValueError(exc.reason) from None
    return EndUser(claims_.principal, "jwt", claims_.audiences, claims_.presenter, claims_.payload)


def _default_host(workload: Workload) -> str:
    """What a client in the mesh sends: ``http://<service>.<namespace>/...``."""
    return f"{workload.service}.{workload.metadata.namespace}"


def _parse_head(method: str, target: str, host: str, headers: dict[str, str]) -> None:
    """Parse the request head with the sidecar's own strict parser (invalid methods, targets,
    header values are refused there with a 400 before any policy runs)."""
    from meshward.http.errors import RemoteProtocolError
    from meshward.http.parser import RequestParser

    lines = [f"{method} {target} HTTP/1.1", f"host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items() if name != "host"]
    try:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        raise RemoteProtocolError("request head is not latin-1 text") from None
    RequestParser().feed(head)


def _headers(pairs: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise CliError(f"--header {pair!r}: expected NAME=VALUE", _USAGE_ERROR)
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
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


def _port(explicit: int | None, workload: Workload) -> int:
    """The sidecar sees the app's port as ``destination.port`` (Istio: the target port)."""
    if explicit is not None:
        return explicit
    return workload.spec.port or 80


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
