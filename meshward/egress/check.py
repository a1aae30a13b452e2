"""``meshward check --from ID --to <external host>``: the egress decision, without traffic.

The caller's sidecar decides external calls, so the caller (``--from``) is resolved to its
Workload (its labels select the EgressPolicies; an identity without a Workload has no labels)
and the request is prepared as the outbound sidecar prepares it: path normalization, the AI
classification when the ExternalService speaks ``openai``, the external port (``--port`` or the
service's first port). A host name that is not declared (``api.unknown.example``) is answered as
the outbound traffic policy answers it: denied under REGISTRY_ONLY.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from meshward.ai.protocol import classify
from meshward.ai.types import AIRequest
from meshward.authz.attributes import RequestAttributes
from meshward.config.build import workload_info
from meshward.egress.engine import ExternalTable, compile_egress
from meshward.identity.spiffe import SpiffeId
from meshward.resources.base import Resource
from meshward.resources.mesh import MeshSpec

__all__ = ["check_egress", "is_external", "print_report"]


def is_external(resources: Sequence[Resource[Any]], target: str) -> bool:
    """Is ``--to`` an external host: declared, or a DNS name that cannot be ``service.namespace``
    (namespaces have no dots; ``.svc`` forms are mesh services)?"""
    host = target.lower().rstrip(".")
    if ExternalTable(resources).resolve(host) is not None:
        return True
    return host.count(".") >= 2 and not host.endswith((".svc", ".svc.cluster.local"))


def check_egress(
    resources: Sequence[Resource[Any]],
    mesh: MeshSpec,
    trust_domain: str,
    caller: SpiffeId,
    target: str,
    method: str,
    path: str,
    headers: dict[str, str],
    model: str | None,
    port: int | None,
    now: float,
) -> dict[str, Any]:
    """The report (``allowed``, ``decision``, ``reason``, ``policy``, ``rule``, …) for one call."""
    host = target.lower().rstrip(".")
    entry = ExternalTable(resources).resolve(host)
    workload = workload_info(resources, caller.namespace, caller.service_account)
    report: dict[str, Any] = {
        "from": caller.uri,
        "to": host,
        "external_service": entry.service if entry else None,
        "workload": f"{workload.namespace}/{workload.name}",
        "method": method,
        "path": path,
    }
    if entry is None:  # what the outbound sidecar does with an undeclared host
        allow_any = mesh.outbound_traffic_policy.mode == "ALLOW_ANY"
        reason = (
            f"{host} is not a declared ExternalService; outboundTrafficPolicy ALLOW_ANY lets it pass unchecked"
            if allow_any
            else f"{host} is neither a mesh service nor a declared ExternalService (outboundTrafficPolicy REGISTRY_ONLY)"
        )
        report.update(allowed=allow_any, decision="allow" if allow_any else "deny", reason=reason)
        return report
    external_port = entry.port_for(port)
    if external_port is None:
        report.update(
            allowed=False,
            decision="deny",
            reason=f"port {port} is not declared by ExternalService {entry.service}",
        )
        return report
    ai = classify(method, path, headers, None) if entry.protocol == "openai" else AIRequest()
    if model:
        ai.model = model
    engine = compile_egress(resources, workload, mesh.root_namespace, trust_domain)
    decision = engine.evaluate(
        RequestAttributes(
            method=method,
            path=path,
            host=host,
            port=external_port,
            principal=caller.principal,
            namespace=caller.namespace,
            headers={**headers, "host": host},
            model=ai.model,
            operation=ai.operation,
            now=now,
        )
    )
    report.update(
        port=external_port,
        tls=entry.ports[external_port],
        model=ai.model,
        ai_operation=ai.operation,
        credential=entry.secret,
        **decision.to_json(),
    )
    return report


def print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    verdict = "ALLOW" if report["allowed"] else "DENY"
    print(
        f"{verdict}  {report['from']} -> {report['to']} (external, {report['external_service']})  "
        f"{report['method']} {report['path']}"
    )
    print(f"  {report['reason']}")
    if report.get("model") or report.get("ai_operation") not in (None, "other"):
        print(f"  model: {report.get('model') or '-'}  operation: {report.get('ai_operation')}")
    if report["allowed"] and report.get("credential"):
        print(f"  credential: secret {report['credential']} injected by the caller's sidecar")
