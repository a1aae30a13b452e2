"""Property tests: the compiled engine against a plain reference reading of Istio's rules.

Random policies over a small vocabulary (so that matches are frequent) and random requests;
the reference below is written straight from the documented semantics, without any of the
engine's compilation, indexing or code generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.authz.attributes import RequestAttributes
from meshward.authz.engine import AuthzEngine
from meshward.resources.authorization import AuthorizationPolicy

TD = "demo.local"
WEB = f"{TD}/ns/web/sa/webapp"
JOB = f"{TD}/ns/batch/sa/job"
# The same principal in the three accepted spellings.
SPELLINGS = {WEB: ["web/webapp", WEB, f"spiffe://{WEB}"], JOB: ["batch/job", JOB, f"spiffe://{JOB}"]}
PRINCIPAL_PATTERNS = ["*", f"{TD}/ns/web/*", "*/sa/job", "web/webapp", WEB, f"spiffe://{JOB}", "batch/job"]
PATHS = ["/v2/models/fraud/infer", "/v2/repository/index", "/v1/chat/completions", "/admin/x"]
PATH_PATTERNS = [*PATHS, "/v2/*", "*/infer", "*", "/v2/models/{*}/infer", "/v2/{**}", "/{*}/x"]
CANONICAL = {s: full for full, spellings in SPELLINGS.items() for s in spellings}


def _canonical(pattern: str) -> str:
    if pattern == "web/*":
        return f"{TD}/ns/web/sa/*"
    return CANONICAL.get(pattern, pattern)


def _string(pattern: str, value: str | None) -> bool:
    if value is None:
        return False
    if pattern == "*":
        return value != ""
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def _template(pattern: list[str], path: list[str]) -> bool:
    if not pattern:
        return not path
    head = pattern[0]
    if head == "{**}":
        return True
    if not path:
        return False
    if head == "{*}":
        return path[0] != "" and _template(pattern[1:], path[1:])
    return head == path[0] and _template(pattern[1:], path[1:])


def _path(pattern: str, value: str) -> bool:
    if "{" in pattern:
        return _template(pattern.split("/"), value.split("/"))
    return _string(pattern, value)


def _ip(block: str, ip: str) -> bool:
    return {"10.0.0.0/8": ip.startswith("10."), "192.0.2.1": ip == "192.0.2.1"}[block]


@dataclass
class Req:
    principal: str | None
    namespace: str | None
    method: str
    path: str
    port: int
    ip: str
    model: str | None
    operation: str
    tenant: str | None

    def attributes(self) -> RequestAttributes:
        return RequestAttributes(
            method=self.method,
            path=self.path,
            host="fraud-model.ml",
            port=self.port,
            principal=self.principal,
            namespace=self.namespace,
            source_ip=self.ip,
            headers={"x-tenant": self.tenant} if self.tenant is not None else {},
            model=self.model,
            operation=self.operation,
        )


def _field(values: list[str] | None, not_values: list[str] | None, match: Any) -> bool:
    if values and not any(match(v) for v in values):
        return False
    return not (not_values and any(match(v) for v in not_values))


def _source(s: dict[str, Any], r: Req) -> bool:
    return (
        _field(s.get("principals"), s.get("notPrincipals"), lambda p: _string(_canonical(p), r.principal))
        and _field(s.get("namespaces"), s.get("notNamespaces"), lambda n: _string(n, r.namespace))
        and _field(s.get("ipBlocks"), s.get("notIpBlocks"), lambda b: _ip(b, r.ip))
    )


def _operation(o: dict[str, Any], r: Req) -> bool:
    return (
        _field(o.get("methods"), o.get("notMethods"), lambda m: _string(m, r.method))
        and _field(o.get("paths"), o.get("notPaths"), lambda p: _path(p, r.path))
        and _field(o.get("ports"), o.get("notPorts"), lambda p: int(p) == r.port)
        and _field(o.get("models"), o.get("notModels"), lambda m: _string(m, r.model))
        and _field(o.get("aiOperations"), o.get("notAiOperations"), lambda op: op == r.operation)
    )


def _condition(c: dict[str, Any], r: Req) -> bool:
    value = {
        "request.headers[x-tenant]": r.tenant,
        "request.model": r.model,
        "source.namespace": r.namespace,
    }[c["key"]]
    return _field(c.get("values"), c.get("notValues"), lambda v: _string(v, value))


def _rule(rule: dict[str, Any], r: Req) -> bool:
    sources = [f["source"] for f in rule.get("from", [])]
    operations = [t["operation"] for t in rule.get("to", [])]
    return (
        (not sources or any(_source(s, r) for s in sources))
        and (not operations or any(_operation(o, r) for o in operations))
        and all(_condition(c, r) for c in rule.get("when", []))
    )


def _matches(doc: dict[str, Any], r: Req) -> bool:
    return any(_rule(rule, r) for rule in doc["spec"].get("rules", []))


def reference(docs: list[dict[str, Any]], r: Req, default_allow: bool, with_dry_run: bool) -> bool:
    live = [d for d in docs if with_dry_run or not _dry(d)]
    if any(_action(d) == "DENY" and _matches(d, r) for d in live):
        return False
    allows = [d for d in live if _action(d) == "ALLOW"]
    if not allows:
        return default_allow
    return any(_matches(d, r) for d in allows)


def _action(doc: dict[str, Any]) -> str:
    return str(doc["spec"].get("action", "ALLOW"))


def _dry(doc: dict[str, Any]) -> bool:
    return doc["metadata"].get("annotations", {}).get("istio.io/dry-run") == "true"


def _some(values: list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), min_size=1, max_size=2)


sources = st.fixed_dictionaries(
    {},
    optional={
        "principals": _some(PRINCIPAL_PATTERNS),
        "notPrincipals": _some(PRINCIPAL_PATTERNS),
        "namespaces": _some(["web", "batch", "we*", "*"]),
        "notNamespaces": _some(["web", "*tch"]),
        "ipBlocks": _some(["10.0.0.0/8", "192.0.2.1"]),
        "notIpBlocks": _some(["10.0.0.0/8"]),
    },
)
operations = st.fixed_dictionaries(
    {},
    optional={
        "methods": _some(["GET", "POST", "P*"]),
        "notMethods": _some(["GET"]),
        "paths": _some(PATH_PATTERNS),
        "notPaths": _some(PATH_PATTERNS),
        "ports": _some(["8080", "9090"]),
        "notPorts": _some(["9090"]),
        "models": _some(["fraud", "gpt*", "*"]),
        "notModels": _some(["fraud"]),
        "aiOperations": _some(["infer", "chat", "admin"]),
        "notAiOperations": _some(["admin"]),
    },
)
conditions = st.builds(
    lambda key, values, negate: {"key": key, ("notValues" if negate else "values"): values},
    st.sampled_from(["request.headers[x-tenant]", "request.model", "source.namespace"]),
    _some(["acme", "fraud", "web", "*"]),
    st.booleans(),
)
rules = st.fixed_dictionaries(
    {},
    optional={
        "from": st.lists(sources.map(lambda s: {"source": s}), max_size=2),
        "to": st.lists(operations.map(lambda o: {"operation": o}), max_size=2),
        "when": st.lists(conditions, max_size=2),
    },
)


@st.composite
def policy_docs(draw: st.DrawFn) -> list[dict[str, Any]]:
    docs = []
    for i in range(draw(st.integers(0, 5))):
        action = draw(st.sampled_from(["ALLOW", "ALLOW", "DENY", "AUDIT"]))
        annotations = {"istio.io/dry-run": "true"} if action != "AUDIT" and draw(st.booleans()) else {}
        spec: dict[str, Any] = {"action": action}
        if draw(st.integers(0, 5)):  # mostly with rules; sometimes none (allow-nothing)
            spec["rules"] = draw(st.lists(rules, min_size=1, max_size=3))
        docs.append(
            {
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": {"name": f"p{i}", "namespace": "ml", "annotations": annotations},
                "spec": spec,
            }
        )
    return docs


requests = st.builds(
    lambda principal, method, path, port, ip, model, tenant: Req(
        principal,
        principal.split("/")[2] if principal else None,
        method,
        path,
        port,
        ip,
        model,
        {
            "/v2/models/fraud/infer": "infer",
            "/v2/repository/index": "admin",
            "/v1/chat/completions": "chat",
        }.get(path, "other"),
        tenant,
    ),
    st.sampled_from([WEB, JOB, f"{TD}/ns/web/sa/other", None]),
    st.sampled_from(["GET", "POST", "post"]),
    st.sampled_from(PATHS),
    st.sampled_from([8080, 9090]),
    st.sampled_from(["10.1.2.3", "192.0.2.1", "fd00::1"]),
    st.sampled_from(["fraud", "gpt-4o", None]),
    st.sampled_from(["acme", None]),
)


def _engine(docs: list[dict[str, Any]], default_allow: bool) -> AuthzEngine:
    policies = [AuthorizationPolicy.model_validate(d) for d in docs]
    return AuthzEngine(
        sorted(policies, key=lambda p: p.metadata.name),
        trust_domain=TD,
        default_policy="allow" if default_allow else "deny",
    )


@settings(max_examples=100, deadline=None)
@given(docs=policy_docs(), reqs=st.lists(requests, min_size=4, max_size=10), default_allow=st.booleans())
def test_engine_agrees_with_the_reference(
    docs: list[dict[str, Any]], reqs: list[Req], default_allow: bool
) -> None:
    engine = _engine(docs, default_allow)
    by_name = {d["metadata"]["name"]: d for d in docs}
    for r in reqs:
        decision = engine.evaluate(r.attributes())
        assert decision.allowed is reference(docs, r, default_allow, with_dry_run=False)
        if decision.policy is not None:  # the named policy really matched, with the named rule
            doc = by_name[decision.policy.split("/")[1]]
            assert not _dry(doc) and _rule(doc["spec"]["rules"][decision.rule or 0], r)
        has_dry = any(_dry(d) for d in docs)
        assert (decision.dry_run is not None) is has_dry
        if decision.dry_run is not None:
            assert decision.dry_run.allowed is reference(docs, r, default_allow, with_dry_run=True)
        audited = {f"ml/{d['metadata']['name']}" for d in docs if _action(d) == "AUDIT" and _matches(d, r)}
        assert set(decision.audit) == audited


@settings(max_examples=50, deadline=None)
@given(
    docs=policy_docs(), extra=st.lists(rules, min_size=1, max_size=2), r=requests, default_allow=st.booleans()
)
def test_adding_a_deny_policy_never_allows_more(
    docs: list[dict[str, Any]], extra: list[dict[str, Any]], r: Req, default_allow: bool
) -> None:
    before = _engine(docs, default_allow).evaluate(r.attributes())
    deny = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "zz-extra-deny", "namespace": "ml"},
        "spec": {"action": "DENY", "rules": extra},
    }
    after = _engine([*docs, deny], default_allow).evaluate(r.attributes())
    assert not (after.allowed and not before.allowed)


@settings(max_examples=50, deadline=None)
@given(docs=policy_docs(), r=requests, default_allow=st.booleans())
def test_dry_run_policies_never_change_the_decision(
    docs: list[dict[str, Any]], r: Req, default_allow: bool
) -> None:
    enforced_only = [d for d in docs if not _dry(d)]
    with_dry = _engine(docs, default_allow).evaluate(r.attributes())
    without = _engine(enforced_only, default_allow).evaluate(r.attributes())
    assert (with_dry.allowed, with_dry.reason, with_dry.policy) == (
        without.allowed,
        without.reason,
        without.policy,
    )
