"""The authorization decision table, shared by the engine tests and the ``meshward check`` tests.

Every case is a set of policies, one request as a client would send it (caller identity,
service, method, raw path, headers, model, port, source address, instant) and the expected
decision with the exact reason. The mesh always holds two workloads:
``fraud-model.ml`` (labels app=fraud-model, version=v1; port 8080; OIP v2) and ``chat.llm``
(labels app=chat; port 8000; OpenAI-compatible).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CASES", "Case", "documents", "policy"]

WED_0300 = "2026-12-02T03:00:00Z"  # a Wednesday


def policy(
    name: str,
    spec: dict[str, Any] | None = None,
    *,
    ns: str = "ml",
    api: str = "security.istio.io/v1",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": api, "kind": "AuthorizationPolicy", "metadata": meta, "spec": spec or {}}


def documents(policies: list[dict[str, Any]], default_policy: str = "deny") -> list[dict[str, Any]]:
    """The whole config of a case: Mesh, the two Workloads, the case's policies."""
    v1 = "meshward.dev/v1alpha1"
    return [
        {
            "apiVersion": v1,
            "kind": "Mesh",
            "metadata": {"name": "mesh", "namespace": "meshward-system"},
            "spec": {"trustDomain": "demo.local", "defaultPolicy": default_policy},
        },
        {
            "apiVersion": v1,
            "kind": "Workload",
            "metadata": {
                "name": "fraud-model-v1",
                "namespace": "ml",
                "labels": {"app": "fraud-model", "version": "v1"},
            },
            "spec": {"service": "fraud-model", "port": 8080},
        },
        {
            "apiVersion": v1,
            "kind": "Workload",
            "metadata": {"name": "chat", "namespace": "llm", "labels": {"app": "chat"}},
            "spec": {"service": "chat", "port": 8000},
        },
        *policies,
    ]


@dataclass(frozen=True)
class Case:
    id: str
    policies: list[dict[str, Any]]
    allowed: bool
    reason: str
    to: str = "fraud-model.ml"
    source: str = "web/webapp"
    method: str = "POST"
    path: str = "/v2/models/fraud/infer"
    headers: dict[str, str] = field(default_factory=dict)
    model: str | None = None
    port: int | None = None
    source_ip: str = "10.1.2.3"
    at: str = WED_0300
    default_policy: str = "deny"
    dry_run: tuple[bool, str] | None = None  # (would allow, reason) when dry-run policies exist
    audit: tuple[str, ...] = ()
    # The sidecar's parser refuses the request (400) before authorization; ``meshward check``
    # says REJECT with this text, the pure engine still gives ``reason``.
    rejected: str | None = None


ALLOW_ALL = policy("allow-all", {"rules": [{}]})


def _allow(name: str, rule: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return policy(name, {"rules": [rule]}, **kw)


def _deny(name: str, rule: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return policy(name, {"action": "DENY", "rules": [rule]}, **kw)


def _src(**fields: Any) -> dict[str, Any]:
    return {"from": [{"source": fields}]}


def _op(**fields: Any) -> dict[str, Any]:
    return {"to": [{"operation": fields}]}


def _when(key: str, values: list[str] | None = None, not_values: list[str] | None = None) -> dict[str, Any]:
    cond: dict[str, Any] = {"key": key}
    if values:
        cond["values"] = values
    if not_values:
        cond["notValues"] = not_values
    return {"when": [cond]}


def _allowed(name: str, rule: int = 0, ns: str = "ml") -> str:
    return f"allowed by {ns}/{name} rules[{rule}]"


def _denied(name: str, rule: int = 0, ns: str = "ml") -> str:
    return f"denied by {ns}/{name} rules[{rule}]"


NO_MATCH = "no ALLOW policy matched"
DEFAULT_DENY = "default deny"
DEFAULT_ALLOW = "no ALLOW policy (defaultPolicy: allow)"

CASES: list[Case] = [
    # --- evaluation semantics ---------------------------------------------------------------
    Case("no-policy-default-deny", [], False, DEFAULT_DENY),
    Case("no-policy-default-allow", [], True, DEFAULT_ALLOW, default_policy="allow"),
    Case("allow-nothing", [policy("allow-nothing")], False, NO_MATCH),
    Case(
        "allow-nothing-beats-default-allow",
        [policy("allow-nothing")],
        False,
        NO_MATCH,
        default_policy="allow",
    ),
    Case("allow-all", [ALLOW_ALL], True, _allowed("allow-all")),
    Case("deny-all", [ALLOW_ALL, _deny("deny-all", {})], False, _denied("deny-all")),
    Case(
        "deny-without-rules-matches-nothing",
        [policy("d", {"action": "DENY"})],
        True,
        DEFAULT_ALLOW,
        default_policy="allow",
    ),
    Case(
        "deny-over-allow",
        [_allow("a", _src(principals=["web/webapp"])), _deny("d", _op(paths=["/v2/models/fraud/infer"]))],
        False,
        _denied("d"),
    ),
    Case(
        "rule-needs-all-fields",
        [_allow("a", {**_src(principals=["web/webapp"]), **_op(methods=["GET"])})],
        False,
        NO_MATCH,
    ),
    Case("list-needs-any-element", [_allow("a", _op(methods=["GET", "POST"]))], True, _allowed("a")),
    Case(
        "second-rule-decides",
        [policy("a", {"rules": [_op(methods=["GET"]), _op(methods=["POST"])]})],
        True,
        _allowed("a", 1),
    ),
    Case(
        "any-from-entry",
        [_allow("a", {"from": [{"source": {"namespaces": ["batch"]}}, {"source": {"namespaces": ["web"]}}]})],
        True,
        _allowed("a"),
    ),
    Case(
        "any-to-entry",
        [_allow("a", {"to": [{"operation": {"methods": ["GET"]}}, {"operation": {"paths": ["/v2/*"]}}]})],
        True,
        _allowed("a"),
    ),
    Case(
        "istio-v1beta1-accepted",
        [policy("a", {"rules": [{}]}, api="security.istio.io/v1beta1")],
        True,
        _allowed("a"),
    ),
    Case(
        "meshward-api-accepted",
        [policy("a", {"rules": [{}]}, api="meshward.dev/v1alpha1")],
        True,
        _allowed("a"),
    ),
    # --- which policies apply ------------------------------------------------------------------
    Case(
        "selector-other-workload",
        [policy("a", {"selector": {"matchLabels": {"app": "other"}}, "rules": [{}]})],
        False,
        DEFAULT_DENY,
    ),
    Case(
        "selector-this-workload",
        [policy("a", {"selector": {"matchLabels": {"app": "fraud-model", "version": "v1"}}, "rules": [{}]})],
        True,
        _allowed("a"),
    ),
    Case("other-namespace-not-applied", [policy("a", {"rules": [{}]}, ns="llm")], False, DEFAULT_DENY),
    Case(
        "root-namespace-mesh-wide",
        [policy("a", {"rules": [{}]}, ns="meshward-system")],
        True,
        _allowed("a", ns="meshward-system"),
    ),
    Case(
        "root-namespace-selector-matches",
        [
            policy(
                "a",
                {"selector": {"matchLabels": {"app": "fraud-model"}}, "rules": [{}]},
                ns="meshward-system",
            )
        ],
        True,
        _allowed("a", ns="meshward-system"),
    ),
    Case(
        "root-namespace-selector-other",
        [policy("a", {"selector": {"matchLabels": {"app": "chat"}}, "rules": [{}]}, ns="meshward-system")],
        False,
        DEFAULT_DENY,
    ),
    # --- source ------------------------------------------------------------------------------
    Case("principal-short-form", [_allow("a", _src(principals=["web/webapp"]))], True, _allowed("a")),
    Case(
        "principal-istio-form",
        [_allow("a", _src(principals=["demo.local/ns/web/sa/webapp"]))],
        True,
        _allowed("a"),
    ),
    Case(
        "principal-spiffe-uri",
        [_allow("a", _src(principals=["spiffe://demo.local/ns/web/sa/webapp"]))],
        True,
        _allowed("a"),
    ),
    Case(
        "principal-other-caller",
        [_allow("a", _src(principals=["web/webapp"]))],
        False,
        NO_MATCH,
        source="batch/job",
    ),
    Case(
        "principal-other-trust-domain",
        [_allow("a", _src(principals=["other.td/ns/web/sa/webapp"]))],
        False,
        NO_MATCH,
    ),
    Case("principal-prefix", [_allow("a", _src(principals=["demo.local/ns/web/*"]))], True, _allowed("a")),
    Case("principal-short-prefix", [_allow("a", _src(principals=["web/*"]))], True, _allowed("a")),
    Case(
        "principal-short-prefix-other-ns",
        [_allow("a", _src(principals=["web/*"]))],
        False,
        NO_MATCH,
        source="batch/webapp",
    ),
    Case(
        "principal-suffix",
        [_allow("a", _src(principals=["*/sa/webapp"]))],
        True,
        _allowed("a"),
        source="batch/webapp",
    ),
    Case(
        "principal-suffix-other-sa",
        [_allow("a", _src(principals=["*/sa/webapp"]))],
        False,
        NO_MATCH,
        source="web/other",
    ),
    Case("principal-presence", [_allow("a", _src(principals=["*"]))], True, _allowed("a")),
    Case(
        "not-principals-match",
        [ALLOW_ALL, _deny("d", _src(notPrincipals=["web/webapp"]))],
        True,
        _allowed("allow-all"),
    ),
    Case(
        "not-principals-other",
        [ALLOW_ALL, _deny("d", _src(notPrincipals=["web/webapp"]))],
        False,
        _denied("d"),
        source="batch/job",
    ),
    Case("namespaces", [_allow("a", _src(namespaces=["web"]))], True, _allowed("a")),
    Case("namespaces-other", [_allow("a", _src(namespaces=["batch"]))], False, NO_MATCH),
    Case("namespaces-prefix", [_allow("a", _src(namespaces=["we*"]))], True, _allowed("a")),
    Case("not-namespaces", [_allow("a", _src(notNamespaces=["web"]))], False, NO_MATCH),
    Case("ip-blocks-cidr", [_allow("a", _src(ipBlocks=["10.1.0.0/16"]))], True, _allowed("a")),
    Case("ip-blocks-single", [_allow("a", _src(ipBlocks=["10.1.2.4"]))], False, NO_MATCH),
    Case(
        "ip-blocks-v6", [_allow("a", _src(ipBlocks=["fd00::/8"]))], True, _allowed("a"), source_ip="fd00::17"
    ),
    Case(
        "ip-blocks-v4-mapped",
        [_allow("a", _src(ipBlocks=["10.1.2.3"]))],
        True,
        _allowed("a"),
        source_ip="::ffff:10.1.2.3",
    ),
    Case(
        "not-ip-blocks",
        [ALLOW_ALL, _deny("d", _src(notIpBlocks=["10.0.0.0/8"]))],
        False,
        _denied("d"),
        source_ip="192.0.2.1",
    ),
    Case("remote-ip-blocks", [_allow("a", _src(remoteIpBlocks=["10.1.2.3/32"]))], True, _allowed("a")),
    Case("not-remote-ip-blocks", [_allow("a", _src(notRemoteIpBlocks=["10.0.0.0/8"]))], False, NO_MATCH),
    Case("request-principals-never-present", [_allow("a", _src(requestPrincipals=["*"]))], False, NO_MATCH),
    Case(
        "not-request-principals-deny-without-jwt",
        [ALLOW_ALL, _deny("d", _src(notRequestPrincipals=["*"]))],
        False,
        _denied("d"),
    ),
    # --- operation ---------------------------------------------------------------------------
    Case("hosts", [_allow("a", _op(hosts=["fraud-model.ml"]))], True, _allowed("a")),
    Case("hosts-case-insensitive", [_allow("a", _op(hosts=["FRAUD-Model.ML"]))], True, _allowed("a")),
    Case("hosts-suffix", [_allow("a", _op(hosts=["*.ml"]))], True, _allowed("a")),
    Case(
        "hosts-port-is-part-of-host",
        [_allow("a", _op(hosts=["fraud-model.ml"]))],
        False,
        NO_MATCH,
        headers={"host": "fraud-model.ml:8080"},
    ),
    Case("not-hosts", [_allow("a", _op(notHosts=["*.ml"]))], False, NO_MATCH),
    Case("ports", [_allow("a", _op(ports=["8080"]))], True, _allowed("a")),
    Case("ports-other", [_allow("a", _op(ports=["9090"]))], False, NO_MATCH),
    Case("ports-explicit", [_allow("a", _op(ports=["9090"]))], True, _allowed("a"), port=9090),
    Case("not-ports", [_allow("a", _op(notPorts=["8080"]))], False, NO_MATCH),
    Case("methods", [_allow("a", _op(methods=["POST"]))], True, _allowed("a")),
    Case(
        "methods-case-sensitive",
        [_allow("a", _op(methods=["POST"]))],
        False,
        NO_MATCH,
        method="post",
        rejected="Invalid method",
    ),
    Case("methods-policy-lower-case", [_allow("a", _op(methods=["post"]))], False, NO_MATCH),
    Case("not-methods", [_allow("a", _op(notMethods=["DELETE"]))], True, _allowed("a")),
    Case("not-methods-match", [_allow("a", _op(notMethods=["POST"]))], False, NO_MATCH),
    Case("paths-exact", [_allow("a", _op(paths=["/v2/models/fraud/infer"]))], True, _allowed("a")),
    Case("paths-prefix", [_allow("a", _op(paths=["/v2/models/*"]))], True, _allowed("a")),
    Case("paths-suffix", [_allow("a", _op(paths=["*/infer"]))], True, _allowed("a")),
    Case("paths-presence", [_allow("a", _op(paths=["*"]))], True, _allowed("a")),
    Case(
        "paths-template-one-segment", [_allow("a", _op(paths=["/v2/models/{*}/infer"]))], True, _allowed("a")
    ),
    Case(
        "paths-template-one-segment-only",
        [_allow("a", _op(paths=["/v2/models/{*}/infer"]))],
        False,
        NO_MATCH,
        path="/v2/models/fraud/versions/2/infer",
    ),
    Case(
        "paths-template-any",
        [_allow("a", _op(paths=["/v2/models/{**}"]))],
        True,
        _allowed("a"),
        path="/v2/models/fraud/versions/2/infer",
    ),
    Case(
        "not-paths",
        [_allow("a", _op(notPaths=["/v2/repository/*"]))],
        False,
        NO_MATCH,
        path="/v2/repository/index",
    ),
    Case("models-from-path", [_allow("a", _op(models=["fraud"]))], True, _allowed("a")),
    Case("models-other", [_allow("a", _op(models=["credit"]))], False, NO_MATCH),
    Case("models-prefix", [_allow("a", _op(models=["fra*"]))], True, _allowed("a")),
    Case(
        "models-from-body",
        [_allow("a", _op(models=["gpt-4o*"]), ns="llm")],
        True,
        _allowed("a", ns="llm"),
        to="chat.llm",
        path="/v1/chat/completions",
        model="gpt-4o-mini",
    ),
    Case(
        "models-from-body-other",
        [_allow("a", _op(models=["gpt-4o*"]), ns="llm")],
        False,
        NO_MATCH,
        to="chat.llm",
        path="/v1/chat/completions",
        model="llama-3",
    ),
    Case(
        "models-unknown-fails-closed",
        [_allow("a", _op(models=["*"]), ns="llm")],
        False,
        NO_MATCH,
        to="chat.llm",
        path="/v1/chat/completions",
    ),
    Case("not-models", [ALLOW_ALL, _deny("d", _op(notModels=["fraud"]))], True, _allowed("allow-all")),
    Case("not-models-other", [ALLOW_ALL, _deny("d", _op(notModels=["credit"]))], False, _denied("d")),
    Case("ai-operations-infer", [_allow("a", _op(aiOperations=["infer"]))], True, _allowed("a")),
    Case(
        "ai-operations-metadata",
        [_allow("a", _op(aiOperations=["infer"]))],
        False,
        NO_MATCH,
        method="GET",
        path="/v2/models/fraud",
    ),
    Case(
        "ai-operations-admin-load",
        [ALLOW_ALL, _deny("d", _op(aiOperations=["admin"]))],
        False,
        _denied("d"),
        path="/v2/repository/models/fraud/load",
    ),
    Case(
        "ai-operations-chat",
        [_allow("a", _op(aiOperations=["chat"]), ns="llm")],
        True,
        _allowed("a", ns="llm"),
        to="chat.llm",
        path="/v1/chat/completions",
    ),
    Case("not-ai-operations", [_allow("a", _op(notAiOperations=["admin", "metadata"]))], True, _allowed("a")),
    Case(
        "not-ai-operations-match",
        [_allow("a", _op(notAiOperations=["admin"]))],
        False,
        NO_MATCH,
        path="/v2/repository/index",
    ),
    # --- when ----------------------------------------------------------------------------------
    Case(
        "when-header",
        [_allow("a", _when("request.headers[X-Tenant]", ["acme"]))],
        True,
        _allowed("a"),
        headers={"x-tenant": "acme"},
    ),
    Case("when-header-missing", [_allow("a", _when("request.headers[X-Tenant]", ["acme"]))], False, NO_MATCH),
    Case(
        "when-header-not-values",
        [_allow("a", _when("request.headers[x-tenant]", not_values=["evil*"]))],
        False,
        NO_MATCH,
        headers={"x-tenant": "evil-corp"},
    ),
    Case("when-model", [_allow("a", _when("request.model", ["fraud"]))], True, _allowed("a")),
    Case(
        "when-principal",
        [_allow("a", _when("source.principal", ["spiffe://demo.local/ns/web/sa/webapp"]))],
        True,
        _allowed("a"),
    ),
    Case("when-namespace", [_allow("a", _when("source.namespace", not_values=["web"]))], False, NO_MATCH),
    Case("when-source-ip", [_allow("a", _when("source.ip", ["10.1.0.0/16"]))], True, _allowed("a")),
    Case("when-remote-ip", [_allow("a", _when("remote.ip", not_values=["10.1.2.3"]))], False, NO_MATCH),
    Case("when-destination-port", [_allow("a", _when("destination.port", ["8080"]))], True, _allowed("a")),
    Case(
        "when-time-inside",
        [_allow("a", _when("request.time", ["Mon-Fri 01:00-05:00 UTC"]))],
        True,
        _allowed("a"),
    ),
    Case(
        "when-time-after",
        [_allow("a", _when("request.time", ["Mon-Fri 01:00-05:00 UTC"]))],
        False,
        NO_MATCH,
        at="2026-12-02T05:00:00Z",
    ),
    Case(
        "when-time-weekend",
        [_allow("a", _when("request.time", ["Mon-Fri 01:00-05:00 UTC"]))],
        False,
        NO_MATCH,
        at="2026-12-05T03:00:00Z",
    ),
    Case(
        "when-time-across-midnight",
        [_allow("a", _when("request.time", ["Fri 22:00-02:00"]))],
        True,
        _allowed("a"),
        at="2026-12-05T01:30:00Z",
    ),
    Case(
        "when-time-across-midnight-ended",
        [_allow("a", _when("request.time", ["Fri 22:00-02:00"]))],
        False,
        NO_MATCH,
        at="2026-12-05T02:00:00Z",
    ),
    Case(
        "when-time-offset",
        [_allow("a", _when("request.time", ["Mon-Fri 09:00-17:00 +02:00"]))],
        True,
        _allowed("a"),
        at="2026-12-02T07:30:00Z",
    ),
    Case(
        "when-time-maintenance-deny",
        [ALLOW_ALL, _deny("d", _when("request.time", ["Wed 02:00-04:00 UTC"]))],
        False,
        _denied("d"),
    ),
    # --- dry run and audit ---------------------------------------------------------------------
    Case(
        "dry-run-deny",
        [ALLOW_ALL, _deny("d", {}, annotations={"meshward.dev/dry-run": "true"})],
        True,
        _allowed("allow-all"),
        dry_run=(False, _denied("d")),
    ),
    Case(
        "dry-run-istio-allow",
        [_allow("a", _src(principals=["web/webapp"]), annotations={"istio.io/dry-run": "true"})],
        False,
        DEFAULT_DENY,
        dry_run=(True, _allowed("a")),
    ),
    Case(
        "dry-run-allow-nothing",
        [policy("a", annotations={"istio.io/dry-run": "true"})],
        True,
        DEFAULT_ALLOW,
        default_policy="allow",
        dry_run=(False, NO_MATCH),
    ),
    Case(
        "dry-run-deny-not-matching",
        [ALLOW_ALL, _deny("d", _op(methods=["DELETE"]), annotations={"meshward.dev/dry-run": "true"})],
        True,
        _allowed("allow-all"),
        dry_run=(True, _allowed("allow-all")),
    ),
    Case(
        "audit-marks",
        [ALLOW_ALL, policy("audit-infer", {"action": "AUDIT", "rules": [_op(aiOperations=["infer"])]})],
        True,
        _allowed("allow-all"),
        audit=("ml/audit-infer",),
    ),
    Case(
        "audit-not-matching",
        [ALLOW_ALL, policy("audit-admin", {"action": "AUDIT", "rules": [_op(aiOperations=["admin"])]})],
        True,
        _allowed("allow-all"),
    ),
    # --- path normalization tricks (the sidecar's normalization runs before any policy) ----------
    Case(
        "dotdot-into-repository",
        [_allow("a", _op(paths=["/v2/models/*"])), _deny("d", _op(paths=["/v2/repository/*"]))],
        False,
        _denied("d"),
        path="/v2/models/../repository/index",
    ),
    Case(
        "encoded-dotdot",
        [_allow("a", _op(paths=["/v2/models/*"]))],
        False,
        NO_MATCH,
        path="/v2/models/fraud/%2e%2e/%2E%2E/repository/models/fraud/load",
    ),
    Case(
        "encoded-dotdot-admin",
        [ALLOW_ALL, _deny("d", _op(aiOperations=["admin"]))],
        False,
        _denied("d"),
        path="/v2/models/fraud/%2e%2e/%2e%2e/repository/models/fraud/load",
    ),
    Case(
        "double-slashes",
        [_allow("a", _op(paths=["/v2/models/fraud/infer"]))],
        True,
        _allowed("a"),
        path="//v2//models/fraud//infer",
    ),
    Case(
        "double-slash-deny-bypass",
        [ALLOW_ALL, _deny("d", _op(paths=["/v2/repository/*"]))],
        False,
        _denied("d"),
        path="/v2//repository/index",
    ),
    Case(
        "encoded-slash-refused",
        [_allow("a", _op(paths=["/v2/models/fraud/infer"]))],
        False,
        NO_MATCH,
        path="/v2/models/fraud%2Finfer",
        rejected="encoded slash",
    ),
    Case(
        "encoded-unreserved",
        [_allow("a", _op(paths=["/v2/models/fraud/infer"]))],
        True,
        _allowed("a"),
        path="/v2/models/fr%61ud/infer",
    ),
    Case(
        "query-ignored",
        [_allow("a", _op(paths=["/v2/models/fraud/infer"]))],
        True,
        _allowed("a"),
        path="/v2/models/fraud/infer?debug=1",
    ),
    Case(
        "dot-segment",
        [_allow("a", _op(paths=["/v2/models/fraud/infer"]))],
        True,
        _allowed("a"),
        path="/v2/./models/fraud/./infer",
    ),
]
