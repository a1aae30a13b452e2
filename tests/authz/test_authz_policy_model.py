"""AuthorizationPolicy load-time validation, through the real YAML loader."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from meshward.resources.authorization import AuthorizationPolicy
from meshward.resources.loader import LoadError, load_text


def _load(
    spec: Any, api: str = "security.istio.io/v1", annotations: dict[str, str] | None = None
) -> AuthorizationPolicy:
    doc = {
        "apiVersion": api,
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "namespace": "ml", "annotations": annotations or {}},
        "spec": spec,
    }
    [policy] = load_text(yaml.safe_dump(doc), "p.yaml")
    assert isinstance(policy, AuthorizationPolicy)
    return policy


def _rule(**parts: Any) -> dict[str, Any]:
    return {"rules": [parts]}


VALID = [
    ("empty-spec", {}),
    ("null-spec-fields", {"rules": []}),
    ("allow-all", {"rules": [{}]}),
    ("deny", {"action": "DENY", "rules": [{}]}),
    ("audit", {"action": "AUDIT", "rules": [{}]}),
    ("selector", {"selector": {"matchLabels": {"app": "x"}}}),
    (
        "every-source-field",
        _rule(
            **{
                "from": [
                    {
                        "source": {
                            "principals": [
                                "web/webapp",
                                "demo.local/ns/a/sa/b",
                                "spiffe://demo.local/ns/a/sa/b",
                                "*",
                                "web/*",
                                "*/sa/x",
                            ],
                            "notPrincipals": ["x/y"],
                            "requestPrincipals": ["iss/sub"],
                            "notRequestPrincipals": ["*"],
                            "namespaces": ["web", "we*", "*eb"],
                            "notNamespaces": ["x"],
                            "ipBlocks": ["10.0.0.0/8", "192.0.2.1", "fd00::/8"],
                            "notIpBlocks": ["10.1.0.0/16"],
                            "remoteIpBlocks": ["203.0.113.0/24"],
                            "notRemoteIpBlocks": ["203.0.113.7"],
                        }
                    }
                ]
            }
        ),
    ),
    (
        "every-operation-field",
        _rule(
            to=[
                {
                    "operation": {
                        "hosts": ["a.ml", "*.ml"],
                        "notHosts": ["b.ml"],
                        "ports": ["8080", 9090],
                        "notPorts": ["1"],
                        "methods": ["GET", "POST"],
                        "notMethods": ["DELETE"],
                        "paths": ["/v2/models/{*}/infer", "/v2/{**}", "/a*", "*/b", "/x/{*}.json"],
                        "notPaths": ["/admin*"],
                        "models": ["gpt-4o*"],
                        "notModels": ["x"],
                        "aiOperations": [
                            "infer",
                            "chat",
                            "completion",
                            "embed",
                            "metadata",
                            "admin",
                            "health",
                            "other",
                        ],
                        "notAiOperations": ["admin"],
                    }
                }
            ]
        ),
    ),
    (
        "when-keys",
        _rule(
            when=[
                {"key": "request.model", "values": ["m"]},
                {"key": "request.headers[X-Tenant]", "notValues": ["evil*"]},
                {"key": "source.principal", "values": ["web/webapp"]},
                {"key": "source.namespace", "values": ["web"]},
                {"key": "source.ip", "values": ["10.0.0.0/8"]},
                {"key": "remote.ip", "notValues": ["10.0.0.1"]},
                {"key": "destination.port", "values": ["8080"]},
                {
                    "key": "request.time",
                    "values": [
                        "Mon-Fri 01:00-05:00 UTC",
                        "22:00-02:00",
                        "Sat,Sun 00:00-24:00 Europe/Berlin",
                        "* 09:00-17:00 +05:30",
                    ],
                },
                {"key": "request.auth.principal", "notValues": ["*"]},
            ]
        ),
    ),
]


@pytest.mark.parametrize(("name", "spec"), VALID, ids=[v[0] for v in VALID])
def test_valid(name: str, spec: Any) -> None:
    policy = _load(spec)
    assert policy.spec.action in ("ALLOW", "DENY", "AUDIT")


@pytest.mark.parametrize(
    "api", ["security.istio.io/v1", "security.istio.io/v1beta1", "meshward.dev/v1alpha1"]
)
def test_api_versions(api: str) -> None:
    assert _load({"rules": [{}]}, api=api).api_version == api


INVALID = [
    (
        "custom",
        {"action": "CUSTOM", "provider": {"name": "ext-authz"}, "rules": [{}]},
        "CUSTOM (external authorization) is not supported",
    ),
    ("provider-without-custom", {"provider": {"name": "x"}}, "provider is only valid with action CUSTOM"),
    ("unknown-action", {"action": "LOG"}, "action"),
    ("unknown-field", {"rules": [{"to": [{"operation": {"verbs": ["GET"]}}]}]}, "verbs"),
    ("target-ref", {"targetRef": {"kind": "Service", "name": "x"}}, "targetRef"),
    ("bad-cidr", _rule(**{"from": [{"source": {"ipBlocks": ["10.0.0.0/33"]}}]}), "not an IP address or CIDR"),
    (
        "bad-ip",
        _rule(**{"from": [{"source": {"notRemoteIpBlocks": ["10.0.0.256"]}}]}),
        "not an IP address or CIDR",
    ),
    ("bad-port", _rule(to=[{"operation": {"ports": ["http"]}}]), "not a port number"),
    ("port-zero", _rule(to=[{"operation": {"notPorts": ["0"]}}]), "not a port number"),
    ("empty-value", _rule(to=[{"operation": {"methods": [""]}}]), "empty value"),
    (
        "inner-wildcard",
        _rule(**{"from": [{"source": {"principals": ["demo.local/ns/team-*/sa/x"]}}]}),
        "only allowed at the start or the end",
    ),
    ("both-wildcards", _rule(to=[{"operation": {"hosts": ["*.ml*"]}}]), "not both"),
    ("double-star", _rule(to=[{"operation": {"paths": ["**"]}}]), "only allowed at the start or the end"),
    (
        "template-not-last",
        _rule(to=[{"operation": {"paths": ["/a/{**}/b/{*}"]}}]),
        "{**} must be the last operator",
    ),
    ("template-unknown-operator", _rule(to=[{"operation": {"paths": ["/a/{id}"]}}]), "only the operators"),
    ("template-relative", _rule(to=[{"operation": {"paths": ["a/{*}"]}}]), "must start with '/'"),
    (
        "ai-operation",
        _rule(to=[{"operation": {"aiOperations": ["train"]}}]),
        "'train' is not an AI operation",
    ),
    (
        "when-unknown-key",
        _rule(when=[{"key": "request.path", "values": ["/"]}]),
        "unknown condition key 'request.path'",
    ),
    (
        "when-unknown-auth-key",
        _rule(when=[{"key": "request.auth.groups", "values": ["x"]}]),
        "not supported by meshward",
    ),
    ("when-sni", _rule(when=[{"key": "connection.sni", "values": ["x"]}]), "not supported by meshward"),
    ("when-no-values", _rule(when=[{"key": "request.model"}]), "needs values or notValues"),
    (
        "when-bad-header-key",
        _rule(when=[{"key": "request.headers[]", "values": ["x"]}]),
        "unknown condition key",
    ),
    (
        "when-bad-window",
        _rule(when=[{"key": "request.time", "values": ["Mon-Fri 1am-5am"]}]),
        "invalid time window",
    ),
    (
        "when-bad-day",
        _rule(when=[{"key": "request.time", "values": ["Mon-Fry 01:00-05:00"]}]),
        "invalid days 'Mon-Fry'",
    ),
    (
        "when-bad-clock",
        _rule(when=[{"key": "request.time", "values": ["01:00-25:00"]}]),
        "invalid time of day '25:00'",
    ),
    (
        "when-bad-zone",
        _rule(when=[{"key": "request.time", "values": ["01:00-05:00 Mars/Olympus"]}]),
        "unknown time zone",
    ),
    ("when-bad-ip", _rule(when=[{"key": "source.ip", "values": ["nope"]}]), "not an IP address"),
    ("when-bad-port", _rule(when=[{"key": "destination.port", "notValues": ["99999"]}]), "not a port number"),
]


@pytest.mark.parametrize(("name", "spec", "message"), INVALID, ids=[v[0] for v in INVALID])
def test_invalid(name: str, spec: Any, message: str) -> None:
    with pytest.raises(LoadError) as info:
        _load(spec)
    text = str(info.value)
    assert message in text
    assert text.startswith("p.yaml:")


@pytest.mark.parametrize(
    ("annotations", "dry_run"),
    [
        ({}, False),
        ({"meshward.dev/dry-run": "true"}, True),
        ({"istio.io/dry-run": "True"}, True),
        ({"istio.io/dry-run": "false"}, False),
    ],
)
def test_dry_run_annotation(annotations: dict[str, str], dry_run: bool) -> None:
    assert _load({"action": "DENY", "rules": [{}]}, annotations=annotations).dry_run is dry_run


def test_dry_run_annotation_values_and_audit_are_checked() -> None:
    with pytest.raises(LoadError, match='must be "true" or "false"'):
        _load({}, annotations={"istio.io/dry-run": "yes"})
    with pytest.raises(LoadError, match="not AUDIT"):
        _load({"action": "AUDIT", "rules": [{}]}, annotations={"meshward.dev/dry-run": "true"})


def test_round_trip_keeps_the_istio_spelling() -> None:
    policy = _load(
        _rule(
            **{"from": [{"source": {"notPrincipals": ["a/b"]}}]},
            to=[{"operation": {"aiOperations": ["chat"]}}],
        )
    )
    doc = policy.to_doc()
    rule = doc["spec"]["rules"][0]
    assert rule["from"][0]["source"]["notPrincipals"] == ["a/b"]
    assert rule["to"][0]["operation"]["aiOperations"] == ["chat"]
    assert AuthorizationPolicy.model_validate(doc) == policy
