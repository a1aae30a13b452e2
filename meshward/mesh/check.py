"""Would this call be allowed? A decision without traffic, as the serving sidecars would make it.

Behind ``meshward check`` and the dashboard's access matrix. The request is turned into the
bytes of a request head and prepared by the sidecar's own code: the strict head parser
(:mod:`meshward.http.parser`: e.g. a lower-case method is a 400 before any policy), then
:func:`meshward.proxy.prepare.prepare_request` (target split, path normalization, header
hygiene, AI classification) and :func:`meshward.filters.authz.attributes_of`: same bytes in,
same attributes out. Each Workload that serves the service decides with the engine compiled
for it (:mod:`meshward.authz.engine`).

Errors the caller made (an unknown service, a malformed identity, unreadable config) raise
:class:`CheckError`; the command line and the dashboard each map it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshward.http.errors import RemoteProtocolError

if TYPE_CHECKING:
    from meshward.authn.enduser import EndUser
    from meshward.authz.attributes import AuthzDecision
    from meshward.authz.trace import RuleTrace
    from meshward.config.snapshot import WorkloadInfo
    from meshward.filters.base import RequestContext
    from meshward.http.normalize import EncodedSlashes
    from meshward.identity.spiffe import SpiffeId
    from meshward.resources import Resource
    from meshward.resources.mesh import Workload

__all__ = ["IDENTITY_FORMS", "CheckError", "call_context", "decide_call", "load_resources", "request_head"]

IDENTITY_FORMS = "NS/SA, TRUST-DOMAIN/ns/NS/sa/SA, spiffe://TRUST-DOMAIN/ns/NS/sa/SA"


class CheckError(Exception):
    """The question cannot be answered (the asker's mistake or unreadable config); the message
    says why in one line."""


def decide_call(
    resources: list[Resource[Any]],
    trust_domain: str | None,
    source: str,
    target: str,
    method: str,
    target_path: str,
    headers: Sequence[tuple[str, str]] = (),
    model: str | None = None,
    port: int | None = None,
    source_ip: str = "127.0.0.1",
    now: float | None = None,
    jwt: Path | None = None,
    claims: str | None = None,
    traces: dict[str, list[RuleTrace]] | None = None,
) -> tuple[dict[str, Any], list[tuple[WorkloadInfo, AuthzDecision]]]:
    """Decide one call as the serving sidecars would: the report ``check --json`` prints (without
    ``workloads``) and each serving Workload's decision. ``headers`` are the request's fields in
    order (a repeated name is sent repeated, as a client would). ``traces``, when given, receives
    each workload's per-rule trace (what failed in each rule)."""
    from meshward.authz.aliases import resolve_aliases
    from meshward.authz.engine import compile_engine
    from meshward.authz.trace import trace_policies
    from meshward.config.selection import select_policies
    from meshward.config.snapshot import WorkloadInfo
    from meshward.filters.authz import attributes_of
    from meshward.identity.spiffe import InvalidSpiffeId, SpiffeId, parse_identity
    from meshward.resources.authorization import AuthorizationPolicy
    from meshward.resources.mesh import Mesh, MeshSpec

    mesh = next((r.spec for r in resources if isinstance(r, Mesh)), MeshSpec())
    trust_domain = trust_domain or mesh.trust_domain
    try:
        caller = parse_identity(source, trust_domain)
    except InvalidSpiffeId as exc:
        raise CheckError(f"--from {source!r}: {exc} (accepted: {IDENTITY_FORMS})") from None
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
    if method == "CONNECT":
        reason = "405 from the sidecar: no CONNECT tunnels (call mesh services over plain http://)"
        report.update({"allowed": False, "decision": "reject", "reason": reason})
        return report, []
    slashes = mesh.path_normalization.encoded_slashes
    contexts: list[RequestContext] = []
    try:
        for w in workloads:
            contexts.append(
                call_context(
                    method,
                    target_path,
                    _host(headers, w),
                    headers,
                    slashes,
                    caller,
                    source_ip,
                    _port(port, w),
                )
            )
    except RemoteProtocolError as exc:
        hint = ""
        if method != method.upper():
            hint = f" (methods are case-sensitive: write {method.upper()!r})"
        report.update(
            {"allowed": False, "decision": "reject", "reason": f"400 from the sidecar: {exc}{hint}"}
        )
        return report, []
    ai = contexts[0].ai
    if model:
        ai.model = model
    report["normalized_path"] = contexts[0].path
    report.update({"model": ai.model, "ai_operation": ai.operation, "ai_protocol": ai.protocol})
    results: list[tuple[WorkloadInfo, AuthzDecision]] = []
    for w, ctx in zip(workloads, contexts, strict=True):
        info = WorkloadInfo(
            w.metadata.name, w.metadata.namespace, w.service, w.service_account, dict(w.metadata.labels)
        )
        engine = compile_engine(
            resources,
            info,
            trust_domain=trust_domain,
            root_namespace=mesh.root_namespace,
            default_policy=mesh.default_policy,
            trust_domain_aliases=mesh.trust_domain_aliases,
        )
        try:
            ctx.end_user = _end_user(jwt, claims, resources, info, mesh.root_namespace, now)
        except ValueError as exc:
            report.update({"allowed": False, "decision": "reject", "reason": f"401 from the sidecar: {exc}"})
            return report, []
        if ctx.end_user is not None:
            report["request_principal"] = ctx.end_user.principal
        ctx.ai = ai
        attrs = attributes_of(ctx, now)
        results.append((info, engine.evaluate(attrs)))
        if traces is not None:
            chosen = select_policies(resources, info, mesh.root_namespace, AuthorizationPolicy)
            policies = [resolve_aliases(p, trust_domain, mesh.trust_domain_aliases) for p in chosen]
            traces[f"{info.namespace}/{info.name}"] = trace_policies(policies, trust_domain, attrs)
    allowed = all(d.allowed for _, d in results)
    report.update({"allowed": allowed, "decision": "allow" if allowed else "deny"})
    return report, results


def request_head(method: str, target: str, host: str, headers: Sequence[tuple[str, str]]) -> bytes:
    """The head a client in the mesh sends: ``Host`` first, then ``headers`` in order (a ``host``
    among them is the one sent). Raises :class:`RemoteProtocolError` if it is not latin-1."""
    lines = [f"{method} {target} HTTP/1.1", f"host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers if name.lower() != "host"]
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        raise RemoteProtocolError("request head is not latin-1 text") from None


def call_context(
    method: str,
    target: str,
    host: str,
    headers: Sequence[tuple[str, str]],
    encoded_slashes: EncodedSlashes,
    caller: SpiffeId,
    source_ip: str,
    port: int,
) -> RequestContext:
    """The request context a serving sidecar builds for this call from ``caller`` (parsed by the
    sidecar's parser, prepared by its :func:`prepare_request`). Raises
    :class:`RemoteProtocolError` for what the sidecar answers with a 400."""
    from meshward.filters.base import Peer
    from meshward.http.events import RequestHead
    from meshward.http.parser import RequestParser
    from meshward.proxy.prepare import prepare_request

    events = RequestParser().feed(request_head(method, target, host, headers))
    head = next((e for e in events if isinstance(e, RequestHead)), None)
    if head is None:  # the parser keeps a partial head: it never is, the head ends in CRLF CRLF
        raise RemoteProtocolError("incomplete request head")
    peer = Peer(source_ip, 0, caller.uri, caller.namespace, caller.service_account)
    return prepare_request(
        head, encoded_slashes, request_id="check", peer=peer, destination_port=port, start=time.monotonic()
    )


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
            raise CheckError(f"cannot read the mesh's config: {exc}") from None
    elif not files:
        raise CheckError(f"no mesh in {state} and no -f FILE: nothing to check against")
    overlay: dict[tuple[str, str, str], Resource[Any]] = {r.key: r for r in base}
    for path in files:
        try:
            for r in load_file(path):
                overlay[r.key] = r
        except LoadError as exc:
            raise CheckError(str(exc)) from None
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
        raise CheckError(f"no Workload serves {target!r} (services: {known})")
    if not namespace and len({w.metadata.namespace for w in found}) > 1:
        spaces = ", ".join(sorted({f"{service}.{w.metadata.namespace}" for w in found}))
        raise CheckError(f"{service!r} is ambiguous: say which namespace ({spaces})")
    return sorted(found, key=lambda w: w.metadata.name)


def _end_user(
    jwt: Path | None,
    claims_json: str | None,
    resources: list[Resource[Any]],
    info: WorkloadInfo,
    root_namespace: str,
    now: float,
) -> EndUser | None:
    """``claims_json``: taken as verified; ``jwt``: verified with the RequestAuthentication rules
    that select the workload (keys fetched from ``jwksUri`` as the sidecar would). Raises
    ValueError with the reason a sidecar would answer 401."""
    from meshward.authn.enduser import EndUser
    from meshward.authn.jwt import IssuerKeys, JwtVerifier, TokenRefused, keys_from_jwks
    from meshward.config.selection import select_policies
    from meshward.resources.authentication import RequestAuthentication

    if claims_json is not None:
        try:
            claims = json.loads(claims_json)
        except ValueError as exc:
            raise CheckError(f"--claims: not JSON: {exc}") from None
        if not isinstance(claims, dict) or not isinstance(claims.get("iss"), str):
            raise CheckError('--claims: a JSON object with at least "iss" and "sub"')
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
        raise CheckError(f"cannot read {jwt}: {exc.strerror}") from None
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


def _host(headers: Sequence[tuple[str, str]], workload: Workload) -> str:
    """The ``Host`` sent: the caller's own, else what a client in the mesh sends for
    ``http://<service>.<namespace>/...``."""
    given = next((value for name, value in headers if name.lower() == "host"), None)
    return given or f"{workload.service}.{workload.metadata.namespace}"


def _port(explicit: int | None, workload: Workload) -> int:
    """The sidecar sees the app's port as ``destination.port`` (Istio: the target port)."""
    if explicit is not None:
        return explicit
    return workload.spec.port or 80
