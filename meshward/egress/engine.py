"""Pure egress decisions: ExternalService and EgressPolicy resources in, decisions out, no I/O.

:class:`ExternalTable` maps an authority's host to its :class:`ExternalEntry` (first by
namespace/name when two services declare the same host). :class:`EgressEngine` holds the
EgressPolicies that select ONE calling workload, compiled once per generation with the
authorization compiler (:mod:`meshward.authz.compiler`: every ``to`` entry is an
AuthorizationPolicy operation, so ``hosts``, ``methods``, ``paths`` (exact, ``prefix*``,
``*suffix``, templates), ``models`` and ``aiOperations`` match exactly as they do inbound).

Decisions: an external call is allowed only if a rule of a selecting policy matches it
(default deny). :meth:`EgressEngine.allows_host` is the host/port-level question a ``CONNECT``
tunnel gets (and the one the control plane asks before releasing a credential): does any rule
allow this host and port at all, whatever the method, path or model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from meshward.authz.attributes import RequestAttributes
from meshward.authz.compiler import CodeBuilder, rule_expression, rule_uses_model
from meshward.authz.engine import select_policies
from meshward.config.snapshot import WorkloadInfo
from meshward.resources.authorization import Operation, Rule, To
from meshward.resources.base import Resource
from meshward.resources.egress import EgressPolicy, EgressRule, ExternalService

__all__ = [
    "EgressDecision",
    "EgressEngine",
    "ExternalEntry",
    "ExternalTable",
    "compile_egress",
]


@dataclass(frozen=True, slots=True)
class ExternalEntry:
    """One declared external host, as the sidecar needs it."""

    service: str  # "ns/name" of the ExternalService
    host: str
    ports: dict[int, bool]  # port number → TLS origination (HTTPS)
    addresses: tuple[tuple[str, int | None], ...]  # fixed endpoints; empty: DNS of ``host``
    ca_bundle: str | None
    protocol: str  # openai | http
    secret: str | None
    header: str
    format: str
    prices: tuple[tuple[str, float, float], ...] = ()  # (model pattern, input, output per 1M tokens)

    def price(self, model: str | None) -> tuple[float, float] | None:
        """Per-million-token prices of ``model`` (first matching entry), or None."""
        if model is None:
            return None
        for pattern, per_input, per_output in self.prices:
            if model == pattern or (pattern.endswith("*") and model.startswith(pattern[:-1])):
                return per_input, per_output
        return None

    @property
    def default_port(self) -> int:
        """The port a call without one (``http://host/…``) goes to: the first declared."""
        return next(iter(self.ports))

    def port_for(self, requested: int | None) -> int | None:
        """The external port for the app's authority port (None or 80: the default); None if
        the app named a port the service does not declare."""
        if requested is None or (requested == 80 and 80 not in self.ports):
            return self.default_port
        return requested if requested in self.ports else None

    def endpoint(self, index: int, port: int) -> tuple[str, int]:
        """Where to connect: the fixed addresses round robin (their port, else ``port``), or DNS."""
        if not self.addresses:
            return self.host, port
        host, fixed = self.addresses[index % len(self.addresses)]
        return host, fixed if fixed is not None else port


def _split_address(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    host, _, port = text.rpartition(":")
    if not host:
        return text, None
    return host, int(port)


class ExternalTable:
    """Host name → :class:`ExternalEntry` for every ExternalService of a snapshot."""

    def __init__(self, resources: Iterable[Resource[Any]]) -> None:
        self.entries: dict[str, ExternalEntry] = {}
        services = sorted(
            (r for r in resources if isinstance(r, ExternalService)),
            key=lambda r: (r.metadata.namespace, r.metadata.name),
        )
        for svc in services:
            spec = svc.spec
            cred = spec.credential
            for host in spec.hosts:
                self.entries.setdefault(
                    host,
                    ExternalEntry(
                        service=f"{svc.metadata.namespace}/{svc.metadata.name}",
                        host=host,
                        ports={p.number: p.protocol == "HTTPS" for p in spec.ports},
                        addresses=tuple(_split_address(a) for a in spec.addresses),
                        ca_bundle=spec.ca_bundle,
                        protocol=spec.protocol,
                        secret=cred.secret if cred else None,
                        header=cred.header if cred else "",
                        format=cred.format if cred else "",
                        prices=tuple(
                            (p.model, p.input_per_million, p.output_per_million) for p in spec.pricing
                        ),
                    ),
                )

    def resolve(self, host: str) -> ExternalEntry | None:
        return self.entries.get(host)

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(frozen=True, slots=True)
class EgressDecision:
    """The outcome, explained: ``policy`` (``ns/name``) and ``rule`` (``rules[N]``) that allowed."""

    allowed: bool
    reason: str
    policy: str | None = None
    rule: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "allowed": self.allowed,
            "decision": "allow" if self.allowed else "deny",
            "reason": self.reason,
            "policy": self.policy,
            "rule": self.rule,
        }


def _as_rule(rule: EgressRule, host_only: bool) -> Rule:
    """The egress rule as an authorization rule (its ``to`` entries are operations)."""
    ops: list[Operation] = list(rule.to)
    if host_only:  # CONNECT / credential release: only the host and port of each entry count
        ops = [
            Operation(hosts=o.hosts, not_hosts=o.not_hosts, ports=o.ports, not_ports=o.not_ports) for o in ops
        ]
    return Rule(to=[To(operation=o) for o in ops])


class EgressEngine:
    """The EgressPolicies of one calling workload, compiled; see the module docstring."""

    def __init__(self, policies: Sequence[EgressPolicy], trust_domain: str) -> None:
        self.policies = tuple(policies)
        refs: list[tuple[str, str]] = []
        full: list[tuple[str, int]] = []
        hosts: list[tuple[str, int]] = []
        code = CodeBuilder()
        self.uses_model = False
        for p in self.policies:
            name = f"{p.metadata.namespace}/{p.metadata.name}"
            for i, rule in enumerate(p.spec.rules):
                index = len(refs)
                refs.append((name, f"rules[{i}]"))
                as_rule = _as_rule(rule, False)
                self.uses_model = self.uses_model or rule_uses_model(as_rule)
                full.append((rule_expression(as_rule, trust_domain, code), index))
                hosts.append((rule_expression(_as_rule(rule, True), trust_domain, code), index))
        full_name = code.first_match(full)
        host_name = code.first_match(hosts)
        namespace = code.build()
        self._full = CodeBuilder.function(namespace, full_name)
        self._hosts = CodeBuilder.function(namespace, host_name)
        self._allowed = tuple(
            EgressDecision(True, f"allowed by {policy} {rule}", policy, rule) for policy, rule in refs
        )

    def evaluate(self, attrs: RequestAttributes) -> EgressDecision:
        """Allowed if one rule matches the whole request; else default deny."""
        index = self._full(attrs)
        if index >= 0:
            return self._allowed[index]
        if not self.policies:
            return EgressDecision(False, f"no EgressPolicy selects this workload; {attrs.host} is denied")
        return EgressDecision(False, f"no EgressPolicy rule allows this call to {attrs.host}")

    def allows_host(self, host: str, port: int) -> EgressDecision:
        """Does any rule allow ``host:port`` at all (CONNECT, credential release)?"""
        index = self._hosts(RequestAttributes(method="CONNECT", path="", host=host, port=port))
        if index >= 0:
            return self._allowed[index]
        return EgressDecision(False, f"no EgressPolicy rule allows {host}:{port}")


def compile_egress(
    resources: Iterable[Resource[Any]], workload: WorkloadInfo, root_namespace: str, trust_domain: str
) -> EgressEngine:
    """The engine of the calling ``workload``: policies of its namespace or the root one that
    select its labels (:func:`meshward.authz.engine.select_policies`)."""
    return EgressEngine(select_policies(resources, workload, root_namespace, EgressPolicy), trust_domain)
