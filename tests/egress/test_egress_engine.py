"""The pure egress engine: tables of calls and decisions, and properties against a reference."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.authz.attributes import RequestAttributes
from meshward.config.snapshot import WorkloadInfo
from meshward.egress.chain import egress_view, inbound_view
from meshward.egress.engine import EgressEngine, ExternalTable, compile_egress
from meshward.resources.egress import EgressPolicy
from meshward.resources.loader import LoadError, load_text
from tests.authz.test_authz_properties import _string as _matches  # Istio's string matching, plainly
from tests.support.sidecar import make_snapshot

TD = "demo.local"
ROOT = "meshward-system"
SUMMARIZER = WorkloadInfo("summarizer", "llm", "summarizer", "summarizer", {"app": "summarizer"})
OTHER = WorkloadInfo("other", "llm", "other", "other", {"app": "other"})
ELSEWHERE = WorkloadInfo("summarizer", "web", "summarizer", "summarizer", {"app": "summarizer"})

POLICIES = """\
apiVersion: meshward.dev/v1alpha1
kind: ExternalService
metadata: {name: llm-provider, namespace: llm}
spec:
  hosts: [api.llm.example, API.Other.Example.]
  ports: [{number: 443, protocol: HTTPS}, {number: 8080, protocol: HTTP}]
  addresses: ["127.0.0.1:8443", "[::1]"]
  protocol: openai
  credential: {secret: llm-key}
  pricing: [{model: gpt-4o-mini, inputPerMillion: 0.15, outputPerMillion: 0.6},
            {model: "gpt-4o*", inputPerMillion: 2.5, outputPerMillion: 10}]
---
apiVersion: meshward.dev/v1alpha1
kind: EgressPolicy
metadata: {name: summarizer-may-chat, namespace: llm}
spec:
  selector: {matchLabels: {app: summarizer}}
  rules:
  - to: [{hosts: [api.llm.example], methods: [POST], paths: ["/v1/chat/completions"], models: ["gpt-4o-mini"]}]
  - to: [{hosts: ["*.other.example"], paths: ["/v1/*"], notPaths: ["/v1/files*"], aiOperations: [embed, chat],
          notModels: ["*-preview"]}]
---
apiVersion: meshward.dev/v1alpha1
kind: EgressPolicy
metadata: {name: mesh-wide-models-list, namespace: meshward-system}
spec:
  rules:
  - to: [{hosts: [api.llm.example], methods: [GET], paths: ["/v1/models"], ports: ["443"]}]
"""
RESOURCES = load_text(POLICIES)


def _call(
    method: str,
    path: str,
    host: str = "api.llm.example",
    model: str | None = None,
    op: str = "other",
    port: int = 443,
) -> RequestAttributes:
    return RequestAttributes(method=method, path=path, host=host, port=port, model=model, operation=op)


CASES: list[tuple[str, WorkloadInfo, RequestAttributes, str | None]] = [
    (
        "the one allowed chat",
        SUMMARIZER,
        _call("POST", "/v1/chat/completions", model="gpt-4o-mini", op="chat"),
        "llm/summarizer-may-chat rules[0]",
    ),
    ("another model", SUMMARIZER, _call("POST", "/v1/chat/completions", model="gpt-4o", op="chat"), None),
    ("no model known", SUMMARIZER, _call("POST", "/v1/chat/completions", op="chat"), None),
    ("another path", SUMMARIZER, _call("POST", "/v1/embeddings", model="gpt-4o-mini", op="embed"), None),
    ("another method", SUMMARIZER, _call("GET", "/v1/chat/completions", model="gpt-4o-mini"), None),
    ("another identity", OTHER, _call("POST", "/v1/chat/completions", model="gpt-4o-mini", op="chat"), None),
    (
        "mesh-wide rule, any workload",
        OTHER,
        _call("GET", "/v1/models"),
        "meshward-system/mesh-wide-models-list rules[0]",
    ),
    ("mesh-wide rule, wrong port", OTHER, _call("GET", "/v1/models", port=8080), None),
    (
        "same labels, other namespace",
        ELSEWHERE,
        _call("POST", "/v1/chat/completions", model="gpt-4o-mini", op="chat"),
        None,
    ),
    (
        "suffix host, prefix path, operation",
        SUMMARIZER,
        _call("POST", "/v1/embeddings", host="api.other.example", model="e5", op="embed"),
        "llm/summarizer-may-chat rules[1]",
    ),
    ("notPaths", SUMMARIZER, _call("POST", "/v1/files/upload", host="api.other.example", op="embed"), None),
    (
        "notModels",
        SUMMARIZER,
        _call("POST", "/v1/embeddings", host="api.other.example", model="x-preview", op="embed"),
        None,
    ),
    (
        "aiOperations",
        SUMMARIZER,
        _call("POST", "/v1/completions", host="api.other.example", op="completion"),
        None,
    ),
    (
        "undeclared host is still denied by rules",
        SUMMARIZER,
        _call("GET", "/v1/models", host="evil.example"),
        None,
    ),
]


@pytest.mark.parametrize(("name", "workload", "attrs", "allowed_by"), CASES, ids=[c[0] for c in CASES])
def test_decisions(
    name: str, workload: WorkloadInfo, attrs: RequestAttributes, allowed_by: str | None
) -> None:
    decision = compile_egress(RESOURCES, workload, ROOT, TD).evaluate(attrs)
    assert decision.allowed == (allowed_by is not None), decision.reason
    if allowed_by is not None:
        assert f"{decision.policy} {decision.rule}" == allowed_by
    else:
        assert attrs.host in decision.reason


def test_connect_is_decided_by_host_and_port_only() -> None:
    summarizer = compile_egress(RESOURCES, SUMMARIZER, ROOT, TD)
    assert summarizer.allows_host("api.llm.example", 443).allowed
    assert summarizer.allows_host("api.other.example", 8080).allowed
    assert not summarizer.allows_host("evil.example", 443).allowed
    other = compile_egress(RESOURCES, OTHER, ROOT, TD)
    assert other.allows_host("api.llm.example", 443).allowed  # the mesh-wide models rule
    assert not other.allows_host("api.llm.example", 8080).allowed
    assert not other.allows_host("api.other.example", 443).allowed


def test_no_policy_is_default_deny() -> None:
    engine = EgressEngine([], TD)
    decision = engine.evaluate(_call("GET", "/"))
    assert not decision.allowed and "no EgressPolicy selects" in decision.reason
    assert not engine.allows_host("api.llm.example", 443).allowed


def test_external_table_resolves_hosts_ports_and_endpoints() -> None:
    table = ExternalTable(RESOURCES)
    entry = table.resolve("api.other.example")  # declared as "API.Other.Example."
    assert entry is not None and entry.service == "llm/llm-provider" and table.resolve("evil.example") is None
    assert entry.port_for(None) == 443 and entry.port_for(80) == 443 and entry.port_for(8080) == 8080
    assert entry.port_for(9999) is None
    assert entry.ports == {443: True, 8080: False}
    assert [entry.endpoint(i, 443) for i in range(3)] == [
        ("127.0.0.1", 8443),
        ("::1", 443),
        ("127.0.0.1", 8443),
    ]
    assert entry.secret == "llm-key" and entry.header == "Authorization" and entry.format == "Bearer {secret}"
    assert entry.price("gpt-4o-mini") == (0.15, 0.6) and entry.price("gpt-4o-2024") == (2.5, 10)
    assert entry.price("e5") is None and entry.price(None) is None


def test_egress_annotated_policies_leave_the_inbound_chain_for_the_outbound_one() -> None:
    def doc(kind: str, name: str, egress: bool, spec: dict[str, Any]) -> dict[str, Any]:
        annotations = {"meshward.dev/applies-to": "egress"} if egress else {}
        meta = {"name": name, "namespace": "llm", "annotations": annotations}
        return {"apiVersion": "meshward.dev/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}

    limit = {"limits": [{"name": "l", "requests": {"limit": 1, "per": "second"}}]}
    snapshot = make_snapshot(
        "llm/summarizer",
        policies=[
            doc("RateLimitPolicy", "in", False, limit),
            doc("RateLimitPolicy", "out", True, limit),
            doc("DataProtectionPolicy", "out-dlp", True, {"detectors": ["email"]}),
            doc("AuthorizationPolicy", "authz", True, {}),  # the annotation means nothing here
        ],
    )
    assert [r.metadata.name for r in inbound_view(snapshot).resources] == ["in", "authz"]
    assert [r.metadata.name for r in egress_view(snapshot).resources] == ["out", "out-dlp"]
    plain = make_snapshot("llm/summarizer", policies=[doc("RateLimitPolicy", "in", False, limit)])
    assert inbound_view(plain) is plain


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("hosts: ['*.example']", "not a DNS host name"),
        ("hosts: [a.example:443]", "not a DNS host name"),
        ("{hosts: [a.example], ports: [{number: 443}, {number: 443}]}", "each port number once"),
        ("{hosts: [a.example], ports: [{number: 443, protocol: TCP}]}", "ports"),
        ("{hosts: [a.example], protocol: grpc}", "protocol"),
        ("{hosts: [a.example], credential: {secret: k, format: 'Bearer'}}", "{secret}"),
        ("{hosts: [a.example], credential: {secret: k, header: 'bad header'}}", "header name"),
        ("{hosts: [a.example], credential: {secret: '../x'}}", "secret"),
        ("{hosts: [a.example], addresses: ['1.2.3.4:99999']}", "HOST:PORT"),
        ("{hosts: [a.example], unknown: 1}", "unknown"),
        (
            "{hosts: [a.example], pricing: [{model: 'a*b', inputPerMillion: 1, outputPerMillion: 1}]}",
            "trailing",
        ),
        ("{hosts: [a.example], pricing: [{model: m, inputPerMillion: -1, outputPerMillion: 1}]}", "pricing"),
    ],
)
def test_bad_external_services_are_refused_at_load(spec: str, error: str) -> None:
    doc = f"apiVersion: meshward.dev/v1alpha1\nkind: ExternalService\nmetadata: {{name: x}}\nspec: {spec}\n"
    if not spec.startswith("{"):
        doc = f"apiVersion: meshward.dev/v1alpha1\nkind: ExternalService\nmetadata: {{name: x}}\nspec: {{{spec}}}\n"
    with pytest.raises(LoadError) as info:
        load_text(doc, "ext.yaml")
    assert error in str(info.value) and "ext.yaml" in str(info.value)


def test_bad_egress_rules_are_refused_at_load() -> None:
    doc = (
        "apiVersion: meshward.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: x}\n"
        "spec: {rules: [{to: [{hosts: [a.example], aiOperations: [dance]}]}]}\n"
    )
    with pytest.raises(LoadError, match="dance"):
        load_text(doc, "egress.yaml")


# --- properties: the compiled engine against a plain reading of the rules ---------------------

HOSTS = ["api.llm.example", "api.other.example", "evil.example"]
HOST_PATTERNS = [*HOSTS, "*.example", "api.*", "*"]
PATHS = ["/v1/chat/completions", "/v1/embeddings", "/v1/models", "/admin"]
PATH_PATTERNS = [*PATHS, "/v1/*", "*/completions", "*"]
MODELS = ["gpt-4o-mini", "gpt-4o", "e5"]
METHODS = ["GET", "POST"]
OPS = ["chat", "embed", "other"]


def _field(to: dict[str, Any], name: str, value: str | None) -> bool:
    pos, neg = to.get(name), to.get("not" + name[0].upper() + name[1:])
    if pos and not any(_matches(p, value) for p in pos):
        return False
    return not (neg and any(_matches(p, value) for p in neg))


def _reference(rules: list[dict[str, Any]], a: RequestAttributes) -> bool:
    for rule in rules:
        tos = rule.get("to", [])
        if not tos:
            return True
        for to in tos:
            ops = to.get("aiOperations")
            if (
                _field(to, "hosts", a.host)
                and _field(to, "methods", a.method)
                and _field(to, "paths", a.path)
                and _field(to, "models", a.model)
                and (not ops or a.operation in ops)
            ):
                return True
    return False


def _to() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "hosts": st.lists(st.sampled_from(HOST_PATTERNS), min_size=1, max_size=2),
            "notHosts": st.lists(st.sampled_from(HOST_PATTERNS), min_size=1, max_size=1),
            "methods": st.lists(st.sampled_from(METHODS), min_size=1, max_size=1),
            "paths": st.lists(st.sampled_from(PATH_PATTERNS), min_size=1, max_size=2),
            "notPaths": st.lists(st.sampled_from(PATH_PATTERNS), min_size=1, max_size=1),
            "models": st.lists(st.sampled_from([*MODELS, "gpt-*"]), min_size=1, max_size=2),
            "notModels": st.lists(st.sampled_from(MODELS), min_size=1, max_size=1),
            "aiOperations": st.lists(st.sampled_from(OPS), min_size=1, max_size=2),
        },
    )


RULES = st.lists(
    st.fixed_dictionaries({}, optional={"to": st.lists(_to(), min_size=1, max_size=2)}), max_size=3
)
CALLS = st.builds(
    lambda m, p, h, model, op: RequestAttributes(
        method=m, path=p, host=h, port=443, model=model, operation=op
    ),
    st.sampled_from(METHODS),
    st.sampled_from(PATHS),
    st.sampled_from(HOSTS),
    st.one_of(st.none(), st.sampled_from(MODELS)),
    st.sampled_from(OPS),
)


def _policy(rules: list[dict[str, Any]]) -> EgressPolicy:
    return EgressPolicy.model_validate(
        {
            "apiVersion": "meshward.dev/v1alpha1",
            "kind": "EgressPolicy",
            "metadata": {"name": "p", "namespace": "llm"},
            "spec": {"rules": rules},
        }
    )


@settings(max_examples=150, deadline=None)
@given(RULES, st.lists(CALLS, min_size=1, max_size=5))
def test_engine_agrees_with_the_reference(
    rules: list[dict[str, Any]], calls: list[RequestAttributes]
) -> None:
    engine = EgressEngine([_policy(rules)], TD)
    for call in calls:
        assert engine.evaluate(call).allowed == _reference(rules, call)


@settings(max_examples=60, deadline=None)
@given(RULES, CALLS)
def test_a_request_allowed_implies_its_host_is_allowed(
    rules: list[dict[str, Any]], call: RequestAttributes
) -> None:
    """CONNECT (host level) is never stricter than a full decision."""
    engine = EgressEngine([_policy(rules)], TD)
    if engine.evaluate(call).allowed:
        assert engine.allows_host(call.host, call.port).allowed
