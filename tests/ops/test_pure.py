"""Pure parts of the operator experience: error bodies, trust domain aliases, the denial trace,
usage and spend, the store's delete/compare, Prometheus targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshward.authz.aliases import principal_trust_domain, resolve_aliases, rewrite_principal
from meshward.authz.attributes import RequestAttributes
from meshward.authz.engine import compile_engine
from meshward.authz.trace import nearest, trace_policies
from meshward.config.snapshot import WorkloadInfo
from meshward.config.store import ConfigStore
from meshward.filters.base import Denial
from meshward.mesh.records import RunRecord, WorkloadRecord
from meshward.mesh.scrape import prometheus_targets
from meshward.metering.spend import Call, call_of_event, summarize
from meshward.proxy.responses import error_document
from meshward.resources.authorization import AuthorizationPolicy
from meshward.resources.loader import load_text
from meshward.resources.mesh import ModelPrice

AUTHZ_DENIAL = Denial("authz", 403, "access denied", policy=None, reason="no ALLOW policy matched")
LIMIT_DENIAL = Denial(
    "ratelimit", 429, "rate limited", policy="llm/budget", rule="tokens", body={"retry_after": 30}
)


@pytest.mark.parametrize(
    ("protocol", "denial", "status", "expected"),
    [
        (
            "openai",
            AUTHZ_DENIAL,
            403,
            {
                "error": {
                    "message": "access denied: no ALLOW policy matched (request id r1)",
                    "type": "permission_error",
                    "code": "access_denied",
                    "param": None,
                },
                "request_id": "r1",
            },
        ),
        (
            "openai",
            LIMIT_DENIAL,
            429,
            {
                "error": {
                    "message": "rate limited (policy llm/budget limit tokens; retry after 30s; request id r1)",
                    "type": "rate_limit_error",
                    "code": "rate_limit_exceeded",
                    "param": None,
                },
                "request_id": "r1",
            },
        ),
        (
            "oip",
            AUTHZ_DENIAL,
            403,
            {"error": "access denied: no ALLOW policy matched (request id r1)", "request_id": "r1"},
        ),
        ("http", AUTHZ_DENIAL, 403, {"error": "access denied", "request_id": "r1"}),
        (None, None, 502, {"error": "access denied", "request_id": "r1"}),
    ],
)
def test_error_bodies_follow_the_route_protocol(
    protocol: str | None, denial: Denial | None, status: int, expected: dict[str, object]
) -> None:
    assert (
        error_document(status, denial.message if denial else "access denied", "r1", protocol, denial)
        == expected
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("cluster.local/ns/web/sa/app", "demo.local/ns/web/sa/app"),
        ("spiffe://cluster.local/ns/web/sa/app", "spiffe://demo.local/ns/web/sa/app"),
        ("other.td/ns/web/sa/app", "other.td/ns/web/sa/app"),
        ("web/app", "web/app"),
        ("*", "*"),
        ("*/ns/web/sa/app", "*/ns/web/sa/app"),
    ],
)
def test_alias_rewriting(value: str, expected: str) -> None:
    assert rewrite_principal(value, "demo.local", ["cluster.local"]) == expected


@given(st.from_regex(r"[a-z][a-z.]{0,10}", fullmatch=True), st.from_regex(r"[a-z]{1,8}", fullmatch=True))
def test_rewriting_only_ever_changes_the_trust_domain(td: str, ns: str) -> None:
    value = f"{td}/ns/{ns}/sa/x"
    out = rewrite_principal(value, "demo.local", [td])
    assert principal_trust_domain(out) == "demo.local" and out.endswith(f"/ns/{ns}/sa/x")


POLICY = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: chat, namespace: llm}
spec:
  rules:
  - from: [{source: {principals: ["cluster.local/ns/web/sa/app"]}}]
    to: [{operation: {methods: [POST], paths: [/v1/chat/completions]}}]
  - from: [{source: {namespaces: [ops]}}]
    to: [{operation: {methods: [GET]}}]
    when: [{key: request.model, values: [big]}]
"""


def _request(principal: str, method: str = "POST") -> RequestAttributes:
    return RequestAttributes(method=method, path="/v1/chat/completions", principal=principal, namespace="web")


def test_aliases_make_the_engine_and_the_trace_agree() -> None:
    [policy] = load_text(POLICY, "p.yaml")
    assert isinstance(policy, AuthorizationPolicy)
    info = WorkloadInfo("chat", "llm", "chat", "chat")
    engine = compile_engine([policy], info, trust_domain="demo.local", trust_domain_aliases=["cluster.local"])
    assert engine.evaluate(_request("demo.local/ns/web/sa/app")).allowed
    assert (
        not compile_engine([policy], info, trust_domain="demo.local")
        .evaluate(_request("demo.local/ns/web/sa/app"))
        .allowed
    )
    resolved = resolve_aliases(policy, "demo.local", ["cluster.local"])
    traces = trace_policies([resolved], "demo.local", _request("demo.local/ns/web/sa/app", "GET"))
    assert [(t.rule, t.matched, t.failed) for t in traces] == [
        (0, False, ["to[0].operation.methods"]),
        (1, False, ["from[0].source.namespaces", "when[0] request.model"]),
    ]
    assert [t.rule for t in nearest(traces)] == [0, 1]


def test_usage_is_summed_and_priced() -> None:
    calls = [
        Call(1000, "spiffe://d/ns/web/sa/a", "big", 100, 50),
        Call(2000, "spiffe://d/ns/web/sa/a", "small", 10, 10),
        Call(3000, "spiffe://d/ns/web/sa/b", "big", 1, 1),
        Call(10, "spiffe://d/ns/web/sa/old", "big", 999, 999),
    ]
    prices = [
        ModelPrice(model="big", inputPerMillion=1e6, outputPerMillion=2e6),
        ModelPrice(model="*", inputPerMillion=0),
    ]
    rows = summarize(calls, "identity", prices, since_ms=500)
    assert [(r.key, r.requests, r.total, r.cost) for r in rows] == [
        ("spiffe://d/ns/web/sa/a", 2, 170, 200.0),
        ("spiffe://d/ns/web/sa/b", 1, 2, 3.0),
    ]
    by_model = summarize(calls, "model", [], since_ms=0)
    assert [(r.key, r.total, r.cost) for r in by_model] == [("big", 2150, None), ("small", 20, None)]


def test_calls_are_read_from_audit_events() -> None:
    event = {
        "time": 5,
        "actor": {"user": {"uid": "spiffe://d/ns/a/sa/b"}},
        "unmapped": {"meshward": {"model": "m", "tokens": [3, 4, False]}},
    }
    assert call_of_event(event) == Call(5, "spiffe://d/ns/a/sa/b", "m", 3, 4)
    assert call_of_event({"unmapped": {"meshward": {"op": "chat"}}}) is None


DOCS = """\
apiVersion: meshward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: a, namespace: ml}
spec: {}
---
apiVersion: meshward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: b, namespace: ml}
spec: {action: DENY, rules: [{}]}
"""


def test_delete_is_a_generation_that_rollback_undoes(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "config.db")
    store.apply(load_text(DOCS, "d.yaml"), "me")
    result = store.delete([("AuthorizationPolicy", "ml", "b")], "me")
    assert result.generation == 2 and [str(c) for c in result.changes if c.action == "deleted"] == [
        "authorizationpolicy ml/b deleted"
    ]
    assert [r.metadata.name for r in store.resources()] == ["a"]
    with pytest.raises(KeyError, match="not found in generation 2"):
        store.delete([("AuthorizationPolicy", "ml", "b")], "me")
    assert [c.action for c in store.compare(1, 2)] == ["deleted"]
    assert [c.action for c in store.compare(0, 1)] == ["created", "created"]
    store.rollback(1, "me")
    assert [r.metadata.name for r in store.resources()] == ["a", "b"]


def test_prometheus_targets_list_every_admin_listener() -> None:
    record = RunRecord(1, "mesh.yaml")
    record.workloads = [
        WorkloadRecord("chat", "llm", "chat", "spiffe://d/ns/llm/sa/chat", admin="127.0.0.1:9000"),
        WorkloadRecord(
            "gone", "llm", "gone", "spiffe://d/ns/llm/sa/gone", admin="127.0.0.1:9001", state="stopped"
        ),
    ]
    [target] = prometheus_targets(record)
    assert (
        target["targets"] == ["127.0.0.1:9000"]
        and target["labels"]["__metrics_path__"] == "/stats/prometheus"
    )
    assert json.dumps(prometheus_targets(None)) == "[]"


def test_https_through_the_sidecar_explains_the_plain_http_rule() -> None:
    from meshward.proxy.responses import failure_reply

    reply = failure_reply("connect_method", "r1")
    head, _, body = reply.data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 Use plain http:// to mesh services (the sidecar adds mTLS)\r\n")
    assert b"plain http://SERVICE.NAMESPACE/" in body


def test_a_long_retry_after_tells_the_openai_sdk_not_to_retry() -> None:
    from meshward.proxy.responses import denial_reply

    def head(seconds: str, protocol: str) -> bytes:
        denial = Denial("ratelimit", 429, "rate limited", headers=[("Retry-After", seconds)])
        return denial_reply(denial, "r1", protocol=protocol).data.partition(b"\r\n\r\n")[0]

    assert b"x-should-retry: false" in head("3600", "openai")
    assert b"x-should-retry" not in head("5", "openai") and b"x-should-retry" not in head("3600", "http")
    assert b"retry-after: 3600" in head("3600", "openai").lower()
