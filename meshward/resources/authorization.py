"""``AuthorizationPolicy``: Istio's schema plus AI fields, validated completely at load time.

Istio documents (``security.istio.io/v1`` and ``v1beta1``) are accepted as they are and mean
the same here. Added fields: ``to.operation.models`` / ``notModels`` (the model a request
targets) and ``aiOperations`` / ``notAiOperations`` (see :data:`AI_OPERATIONS`); ``when`` keys
``request.model`` and ``request.time`` (windows, see :mod:`meshward.patterns.timewindow`).

Semantics (evaluated by :mod:`meshward.authz`): ``action`` ALLOW (default), DENY or AUDIT;
CUSTOM (external authorization) is refused. No ``rules`` matches nothing (``spec: {}`` is
Istio's "allow-nothing"); ``rules: [{}]`` matches everything. Every value a policy holds is
checked here (CIDRs, ports, templates, wildcards, when keys, time windows), so a policy that
loads compiles. Dry run: annotation ``meshward.dev/dry-run: "true"`` or ``istio.io/dry-run``.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Final, Literal

from pydantic import Field, field_validator, model_validator

from meshward.patterns.ipblocks import check_ip_block
from meshward.patterns.paths import check_path_pattern
from meshward.patterns.strings import check_string_pattern
from meshward.patterns.timewindow import parse_time_window
from meshward.resources.base import API_VERSION, Resource, Selector, Strict, register

__all__ = [
    "AI_OPERATIONS",
    "DRY_RUN_ANNOTATIONS",
    "AuthorizationPolicy",
    "AuthorizationPolicySpec",
    "Condition",
    "From",
    "Operation",
    "Rule",
    "Source",
    "To",
    "is_dry_run",
]

AI_OPERATIONS: Final = ("infer", "chat", "completion", "embed", "metadata", "admin", "health", "other")
DRY_RUN_ANNOTATIONS: Final = ("meshward.dev/dry-run", "istio.io/dry-run")

_HEADER_KEY: Final = re.compile(r"^request\.headers\[([!#$%&'*+\-.^_`|~0-9A-Za-z]+)\]$")
_SIMPLE_KEYS: Final = frozenset(
    {
        "request.model",
        "request.time",
        "source.principal",
        "source.namespace",
        "source.ip",
        "remote.ip",
        "destination.port",
        "request.auth.principal",  # the end user: a JWT's iss/sub, or an API key's principal
        "request.auth.audiences",
        "request.auth.presenter",
    }
)
_CLAIM_KEY: Final = re.compile(r"^request\.auth\.claims((\[[^\[\]]+\])+)$")
_UNSUPPORTED_PREFIXES: Final = ("request.auth.", "destination.ip", "connection.sni", "experimental.")


def claim_path(key: str) -> tuple[str, ...] | None:
    """``request.auth.claims[a][b]`` → ("a", "b"); None for any other key."""
    m = _CLAIM_KEY.match(key)
    return tuple(m.group(1)[1:-1].split("][")) if m else None


StrList = list[str]


def _check_all(values: list[str], check: Any, field: str) -> list[str]:
    for value in values:
        try:
            check(value)
        except ValueError as exc:
            raise ValueError(f"{field}: {exc}") from None
    return values


def _check_port(value: str) -> None:
    if not value.isdigit() or not 0 < int(value) <= 65535:
        raise ValueError(f"{value!r} is not a port number (1-65535)")


def _check_ai_operation(value: str) -> None:
    if value not in AI_OPERATIONS:
        raise ValueError(f"{value!r} is not an AI operation (one of {', '.join(AI_OPERATIONS)})")


class Source(Strict):
    """Who calls. Fields are ANDed; each list matches if any of its values does."""

    principals: StrList = Field(default_factory=list)
    not_principals: StrList = Field(default_factory=list, alias="notPrincipals")
    request_principals: StrList = Field(default_factory=list, alias="requestPrincipals")
    not_request_principals: StrList = Field(default_factory=list, alias="notRequestPrincipals")
    namespaces: StrList = Field(default_factory=list)
    not_namespaces: StrList = Field(default_factory=list, alias="notNamespaces")
    ip_blocks: StrList = Field(default_factory=list, alias="ipBlocks")
    not_ip_blocks: StrList = Field(default_factory=list, alias="notIpBlocks")
    remote_ip_blocks: StrList = Field(default_factory=list, alias="remoteIpBlocks")
    not_remote_ip_blocks: StrList = Field(default_factory=list, alias="notRemoteIpBlocks")

    @field_validator(
        "principals",
        "not_principals",
        "request_principals",
        "not_request_principals",
        "namespaces",
        "not_namespaces",
    )
    @classmethod
    def _strings(cls, v: StrList) -> StrList:
        return _check_all(v, check_string_pattern, "value")

    @field_validator("ip_blocks", "not_ip_blocks", "remote_ip_blocks", "not_remote_ip_blocks")
    @classmethod
    def _ips(cls, v: StrList) -> StrList:
        return _check_all(v, check_ip_block, "value")


class Operation(Strict):
    """What is called. Fields are ANDed; each list matches if any of its values does."""

    hosts: StrList = Field(default_factory=list)
    not_hosts: StrList = Field(default_factory=list, alias="notHosts")
    ports: StrList = Field(default_factory=list)
    not_ports: StrList = Field(default_factory=list, alias="notPorts")
    methods: StrList = Field(default_factory=list)
    not_methods: StrList = Field(default_factory=list, alias="notMethods")
    paths: StrList = Field(default_factory=list)
    not_paths: StrList = Field(default_factory=list, alias="notPaths")
    models: StrList = Field(default_factory=list)
    not_models: StrList = Field(default_factory=list, alias="notModels")
    ai_operations: StrList = Field(default_factory=list, alias="aiOperations")
    not_ai_operations: StrList = Field(default_factory=list, alias="notAiOperations")

    @field_validator("hosts", "not_hosts", "methods", "not_methods", "models", "not_models")
    @classmethod
    def _strings(cls, v: StrList) -> StrList:
        return _check_all(v, check_string_pattern, "value")

    @field_validator("ports", "not_ports", mode="before")
    @classmethod
    def _ports(cls, v: Any) -> Any:
        if isinstance(v, list):  # YAML authors write ports: [8080]; Istio's schema says strings
            v = [str(p) if isinstance(p, int) and not isinstance(p, bool) else p for p in v]
            _check_all([p for p in v if isinstance(p, str)], _check_port, "value")
        return v

    @field_validator("paths", "not_paths")
    @classmethod
    def _paths(cls, v: StrList) -> StrList:
        return _check_all(v, check_path_pattern, "value")

    @field_validator("ai_operations", "not_ai_operations")
    @classmethod
    def _ai_operations(cls, v: StrList) -> StrList:
        return _check_all(v, _check_ai_operation, "value")


class From(Strict):
    source: Source = Field(default_factory=Source)


class To(Strict):
    operation: Operation = Field(default_factory=Operation)


class Condition(Strict):
    """``when``: the attribute ``key`` must match one of ``values`` and none of ``notValues``."""

    key: str
    values: StrList = Field(default_factory=list)
    not_values: StrList = Field(default_factory=list, alias="notValues")

    @field_validator("key")
    @classmethod
    def _key(cls, key: str) -> str:
        if key in _SIMPLE_KEYS or _HEADER_KEY.match(key) or claim_path(key):
            return key
        if key.startswith(_UNSUPPORTED_PREFIXES):
            raise ValueError(f"condition key {key!r} is not supported by meshward")
        supported = ", ".join(sorted(_SIMPLE_KEYS | {"request.headers[NAME]", "request.auth.claims[NAME]"}))
        raise ValueError(f"unknown condition key {key!r} (supported: {supported})")

    @model_validator(mode="after")
    def _values(self) -> Condition:
        if not self.values and not self.not_values:
            raise ValueError(f"condition {self.key!r} needs values or notValues")
        check = {
            "request.time": _check_time_window,
            "source.ip": check_ip_block,
            "remote.ip": check_ip_block,
            "destination.port": _check_port,
        }.get(self.key, check_string_pattern)
        _check_all(self.values, check, "values")
        _check_all(self.not_values, check, "notValues")
        return self


def _check_time_window(value: str) -> None:
    parse_time_window(value)  # InvalidTimeWindow is a ValueError naming the problem


class Rule(Strict):
    """A match needs one ``from`` source (if any), one ``to`` operation (if any) and every
    ``when`` condition. An empty rule matches every request."""

    from_: list[From] = Field(default_factory=list, alias="from")
    to: list[To] = Field(default_factory=list)
    when: list[Condition] = Field(default_factory=list)


class AuthorizationPolicySpec(Strict):
    selector: Selector = Field(default_factory=Selector)
    action: Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"] = "ALLOW"
    provider: dict[str, Any] | None = None  # only to refuse CUSTOM with a clear message
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _action(self) -> AuthorizationPolicySpec:
        if self.action == "CUSTOM":
            raise ValueError(
                "action CUSTOM (external authorization) is not supported by meshward; use ALLOW, DENY or AUDIT"
            )
        if self.provider is not None:
            raise ValueError("provider is only valid with action CUSTOM, which meshward does not support")
        return self


def is_dry_run(annotations: dict[str, str]) -> bool:
    """Does ``meshward.dev/dry-run`` or ``istio.io/dry-run`` say "true"?"""
    return any(annotations.get(name, "").strip().lower() == "true" for name in DRY_RUN_ANNOTATIONS)


@register
class AuthorizationPolicy(Resource[AuthorizationPolicySpec]):
    kind_name = "AuthorizationPolicy"
    api_versions = (API_VERSION, "security.istio.io/v1", "security.istio.io/v1beta1")

    @model_validator(mode="after")
    def _annotations(self) -> AuthorizationPolicy:
        for name in DRY_RUN_ANNOTATIONS:
            value = self.metadata.annotations.get(name)
            if value is not None and value.strip().lower() not in ("true", "false"):
                raise ValueError(f'annotation {name} must be "true" or "false", not {value!r}')
        if self.dry_run and self.spec.action == "AUDIT":
            raise ValueError("dry-run applies to ALLOW and DENY policies, not AUDIT")
        return self

    @functools.cached_property
    def dry_run(self) -> bool:
        """Once per (frozen) policy: the engine asks it of every policy several times per compile."""
        return is_dry_run(self.metadata.annotations)
