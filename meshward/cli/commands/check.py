"""``meshward check``: would this call be allowed? Answers without sending any traffic.

::

    meshward check --from ID --to SERVICE[.NS] --method M --path P [--header K=V ...]
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
    from meshward.config.snapshot import WorkloadInfo
    from meshward.resources import Resource
    from meshward.resources.mesh import Workload

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
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    p.add_argument(
        "-f", "--file", action="append", default=[], type=Path, metavar="FILE", help="resources (YAML)"
    )
    p.set_defaults(func=check)


def check(args: argparse.Namespace) -> int:
    from meshward.ai.protocol import classify
    from meshward.authz.attributes import RequestAttributes
    from meshward.authz.engine import compile_engine
    from meshward.config.snapshot import WorkloadInfo
    from meshward.http.errors import RemoteProtocolError
    from meshward.http.normalize import normalize_path, split_target
    from meshward.identity.spiffe import InvalidSpiffeId, parse_identity
    from meshward.resources.mesh import Mesh, MeshSpec

    resources, trust_domain = _resources(args.state, args.file)
    mesh = next((r.spec for r in resources if isinstance(r, Mesh)), MeshSpec())
    trust_domain = trust_domain or mesh.trust_domain
    try:
        caller = parse_identity(args.source, trust_domain)
    except InvalidSpiffeId as exc:
        raise CliError(f"--from: {exc}", _USAGE_ERROR) from None
    workloads = _serving(resources, args.target)
    headers = _headers(args.header)
    now = _instant(args.at)
    report: dict[str, Any] = {
        "from": caller.uri,
        "to": args.target,
        "method": args.method,
        "path": args.path,
    }
    try:
        _parse_head(args.method, args.path, headers.get("host") or _default_host(workloads[0]), headers)
        _, path, _query = split_target(args.path)
        path = normalize_path(path, mesh.path_normalization.encoded_slashes)
    except RemoteProtocolError as exc:
        report.update({"allowed": False, "decision": "reject", "reason": f"400 from the sidecar: {exc}"})
        _print(args, report, [])
        return 1
    report["normalized_path"] = path
    ai = classify(args.method, path, headers, None)
    if args.model:
        ai.model = args.model
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
        )
        attrs = RequestAttributes(
            method=args.method,
            path=path,
            host=host,
            port=_port(args.port, w),
            principal=caller.principal,
            namespace=caller.namespace,
            source_ip=args.source_ip,
            headers={**headers, "host": host},  # as the sidecar sees them: Host included
            model=ai.model,
            operation=ai.operation,
            now=now,
        )
        results.append((info, engine.evaluate(attrs)))
    allowed = all(d.allowed for _, d in results)
    report.update({"allowed": allowed, "decision": "allow" if allowed else "deny"})
    _print(args, report, results)
    return 0 if allowed else 1


def _resources(state: Path, files: list[Path]) -> tuple[list[Resource[Any]], str | None]:
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
            for kind in ("Mesh", "Workload", "AuthorizationPolicy"):
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
    from meshward.resources.mesh import Workload

    service, _, namespace = target.partition(".")
    workloads = [r for r in resources if isinstance(r, Workload)]
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
    args: argparse.Namespace, report: dict[str, Any], results: list[tuple[WorkloadInfo, AuthzDecision]]
) -> None:
    if args.json:
        report["workloads"] = [{"workload": f"{w.namespace}/{w.name}", **d.to_json()} for w, d in results]
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
