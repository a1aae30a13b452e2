"""The authz filter: what it decides, records in the request context and counts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from meshward.ai.protocol import classify
from meshward.config.snapshot import MeshSnapshot, WorkloadInfo
from meshward.filters.authz import AuthzFilter, build, counters
from meshward.filters.base import Denial, Filter, Peer, RequestContext, SidecarRuntime
from meshward.resources.authorization import AuthorizationPolicy
from meshward.resources.mesh import MeshSpec

WORKLOAD = WorkloadInfo("chat", "llm", "chat", "chat", {"app": "chat"})


def _policy(
    name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None
) -> AuthorizationPolicy:
    return AuthorizationPolicy.model_validate(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": "llm", "annotations": annotations or {}},
            "spec": spec,
        }
    )


def _snapshot(*policies: AuthorizationPolicy, default_policy: str = "deny") -> MeshSnapshot:
    return MeshSnapshot(
        generation=3,
        trust_domain="demo.local",
        mesh=MeshSpec.model_validate({"defaultPolicy": default_policy}),
        workload=WORKLOAD,
        services={},
        resources=tuple(policies),
    )


def _runtime() -> SidecarRuntime:
    return SidecarRuntime(workload=WORKLOAD, trust_domain="demo.local")


def _ctx(
    principal: str | None = "web/webapp",
    path: str = "/v1/chat/completions",
    body: dict[str, Any] | None = None,
) -> RequestContext:
    spiffe = None
    if principal is not None:
        ns, sa = principal.split("/")
        spiffe = f"spiffe://demo.local/ns/{ns}/sa/{sa}"
    headers = {"content-type": "application/json", "host": "chat.llm"}
    raw = json.dumps(body).encode() if body is not None else None
    ctx = RequestContext(
        request_id="r1",
        direction="inbound",
        peer=Peer(ip="10.0.0.9", port=40000, spiffe_id=spiffe),
        method="POST",
        path=path,
        query="",
        host="chat.llm",
        headers=headers,
        destination_port=8000,
        start=0.0,
        body=raw,
    )
    ctx.ai = classify("POST", path, headers, raw)
    return ctx


def _run(f: Filter | None, ctx: RequestContext) -> Denial | None:
    assert isinstance(f, AuthzFilter)
    return asyncio.run(f.on_request(ctx))


ALLOW_WEB = _policy("allow-web", {"rules": [{"from": [{"source": {"namespaces": ["web"]}}]}]})


def test_allow_records_the_policy_and_counts() -> None:
    runtime = _runtime()
    f = build(_snapshot(ALLOW_WEB), runtime)
    assert isinstance(f, AuthzFilter)
    ctx = _ctx()
    assert _run(f, ctx) is None
    assert (ctx.decision, ctx.policy, ctx.rule) == ("allow", "llm/allow-web", "rules[0]")
    assert ctx.scratch["authz.reason"] == "allowed by llm/allow-web rules[0]"
    assert counters(runtime)["allowed"] == {"llm/allow-web": 1}


def test_deny_is_a_403_naming_nothing_to_the_caller() -> None:
    runtime = _runtime()
    f = build(_snapshot(ALLOW_WEB), runtime)
    assert f is not None
    ctx = _ctx(principal="batch/job")
    denial = _run(f, ctx)
    assert denial is not None
    assert (denial.kind, denial.status, denial.message) == ("authz", 403, "access denied")
    assert (denial.policy, denial.rule, denial.body) == (None, None, {})
    assert (ctx.decision, ctx.policy) == ("deny", None)
    assert ctx.scratch["authz.reason"] == "no ALLOW policy matched"
    assert counters(runtime)["denied"] == {"-": 1}


def test_deny_policy_is_named_in_the_denial() -> None:
    deny = _policy(
        "deny-chat", {"action": "DENY", "rules": [{"to": [{"operation": {"aiOperations": ["chat"]}}]}]}
    )
    f = build(_snapshot(ALLOW_WEB, deny), _runtime())
    denial = _run(f, _ctx())
    assert denial is not None and (denial.policy, denial.rule) == ("llm/deny-chat", "rules[0]")


def test_plaintext_caller_has_no_principal() -> None:
    allow_any_identity = _policy("mtls-only", {"rules": [{"from": [{"source": {"principals": ["*"]}}]}]})
    f = build(_snapshot(allow_any_identity), _runtime())
    assert _run(f, _ctx(principal=None)) is not None
    assert _run(f, _ctx()) is None


def test_dry_run_deny_is_recorded_not_enforced() -> None:
    runtime = _runtime()
    would_deny = _policy("block-all", {"action": "DENY", "rules": [{}]}, {"meshward.dev/dry-run": "true"})
    f = build(_snapshot(ALLOW_WEB, would_deny), runtime)
    ctx = _ctx()
    assert _run(f, ctx) is None
    assert (ctx.decision, ctx.policy, ctx.rule) == ("dry_run_deny", "llm/block-all", "rules[0]")
    counts = counters(runtime)
    assert counts["allowed"] == {"llm/allow-web": 1}
    assert counts["dry_run_denied"] == {"llm/block-all": 1}
    ctx = _ctx(principal="batch/job")  # denied anyway: the dry-run result agrees
    assert _run(f, ctx) is not None
    assert counts["dry_run_denied"] == {"llm/block-all": 2}


def test_dry_run_allow_counts() -> None:
    runtime = _runtime()
    would_allow = _policy("open", {"rules": [{}]}, {"istio.io/dry-run": "true"})
    f = build(_snapshot(would_allow), runtime)
    ctx = _ctx()
    assert _run(f, ctx) is not None
    assert ctx.decision == "deny" and ctx.scratch["authz.reason"] == "default deny"
    assert counters(runtime)["dry_run_allowed"] == {"llm/open": 1}


def test_audit_marks() -> None:
    audit = _policy(
        "audit-chat", {"action": "AUDIT", "rules": [{"to": [{"operation": {"aiOperations": ["chat"]}}]}]}
    )
    f = build(_snapshot(ALLOW_WEB, audit), _runtime())
    ctx = _ctx()
    assert _run(f, ctx) is None
    assert ctx.audit_marks == ["llm/audit-chat"]


def test_counters_survive_a_new_generation() -> None:
    runtime = _runtime()
    for _ in range(2):
        f = build(_snapshot(ALLOW_WEB), runtime)
        _run(f, _ctx())
    assert counters(runtime)["allowed"] == {"llm/allow-web": 2}


def test_no_filter_when_nothing_can_be_denied() -> None:
    assert build(_snapshot(default_policy="allow"), _runtime()) is None
    assert build(_snapshot(default_policy="deny"), _runtime()) is not None


@pytest.mark.parametrize(
    ("policies", "path", "body", "wants"),
    [
        (
            [_policy("m", {"rules": [{"to": [{"operation": {"models": ["gpt-4o"]}}]}]})],
            "/v1/chat/completions",
            None,
            True,
        ),
        (
            [_policy("m", {"rules": [{"when": [{"key": "request.model", "values": ["gpt-4o"]}]}]})],
            "/v1/chat/completions",
            None,
            True,
        ),
        (
            [_policy("m", {"rules": [{"to": [{"operation": {"models": ["gpt-4o"]}}]}]})],
            "/v2/models/x/infer",
            None,
            False,
        ),
        (
            [_policy("m", {"rules": [{"to": [{"operation": {"models": ["gpt-4o"]}}]}]})],
            "/v1/chat/completions",
            {"model": "gpt-4o"},
            False,
        ),
        ([ALLOW_WEB], "/v1/chat/completions", None, False),
    ],
)
def test_wants_request_body(
    policies: list[AuthorizationPolicy], path: str, body: dict[str, Any] | None, wants: bool
) -> None:
    f = build(_snapshot(*policies), _runtime())
    assert f is not None and f.wants_request_body(_ctx(path=path, body=body)) is wants


def test_model_from_the_buffered_body_decides() -> None:
    models = _policy("gpt-only", {"rules": [{"to": [{"operation": {"models": ["gpt-4o*"]}}]}]})
    f = build(_snapshot(models), _runtime())
    assert _run(f, _ctx(body={"model": "gpt-4o-mini", "messages": []})) is None
    assert _run(f, _ctx(body={"model": "llama-3", "messages": []})) is not None
    assert _run(f, _ctx(body=None)) is not None  # unknown model: fail closed
