"""The decision table (``cases.py``) through the pure engine, request prepared as the sidecar does.

The model of OpenAI-style cases travels in a real JSON body here (classified by
:mod:`meshward.ai.protocol`); ``test_authz_check_cli.py`` runs the same table through
``meshward check``.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
import yaml

from meshward.ai.protocol import classify
from meshward.authz.attributes import AuthzDecision, RequestAttributes
from meshward.authz.engine import compile_engine
from meshward.config.snapshot import WorkloadInfo
from meshward.http.errors import RemoteProtocolError
from meshward.http.normalize import normalize_path, split_target
from meshward.identity.spiffe import parse_identity
from meshward.resources.loader import load_text
from meshward.resources.mesh import Mesh, Workload
from tests.authz.cases import CASES, Case, documents


def decide(case: Case) -> AuthzDecision:
    resources = load_text(yaml.safe_dump_all(documents(case.policies, case.default_policy)))
    mesh = next(r.spec for r in resources if isinstance(r, Mesh))
    service, _, namespace = case.to.partition(".")
    w = next(
        r
        for r in resources
        if isinstance(r, Workload) and r.service == service and r.metadata.namespace == namespace
    )
    info = WorkloadInfo(w.metadata.name, namespace, w.service, w.service_account, dict(w.metadata.labels))
    engine = compile_engine(
        resources,
        info,
        trust_domain=mesh.trust_domain,
        root_namespace=mesh.root_namespace,
        default_policy=mesh.default_policy,
    )
    _, path, _ = split_target(case.path)
    path = normalize_path(path)
    headers = dict(case.headers)
    body = None
    if case.model is not None:
        headers.setdefault("content-type", "application/json")
        body = json.dumps({"model": case.model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    ai = classify(case.method, path, headers, body)
    host = headers.get("host") or f"{service}.{namespace}"
    port = case.port or w.spec.port
    caller = parse_identity(case.source, mesh.trust_domain)
    now = dt.datetime.fromisoformat(case.at.replace("Z", "+00:00")).timestamp()
    attrs = RequestAttributes(
        method=case.method,
        path=path,
        host=host,
        port=port,
        principal=caller.principal,
        namespace=caller.namespace,
        source_ip=case.source_ip,
        headers=headers,
        model=ai.model,
        operation=ai.operation,
        now=now,
    )
    return engine.evaluate(attrs)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decision(case: Case) -> None:
    try:
        decision = decide(case)
    except RemoteProtocolError as exc:  # refused before any policy runs (400 from the sidecar)
        assert case.rejected is not None and case.rejected in exc.message
        return
    assert (decision.allowed, decision.reason) == (case.allowed, case.reason)
    if case.dry_run is None:
        assert decision.dry_run is None
    else:
        assert decision.dry_run is not None
        assert (decision.dry_run.allowed, decision.dry_run.reason) == case.dry_run
    assert decision.audit == case.audit


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


def test_policy_and_rule_are_named() -> None:
    case = next(c for c in CASES if c.id == "second-rule-decides")
    decision = decide(case)
    assert (decision.policy, decision.rule, decision.rule_ref, decision.action) == (
        "ml/a",
        1,
        "rules[1]",
        "ALLOW",
    )
