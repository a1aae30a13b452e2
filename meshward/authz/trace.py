"""Why a request was (not) matched: a per-rule, per-condition trace (``meshward check``).

Each field of a rule (``from[0].source.principals``, ``to[0].operation.methods``,
``when[1] request.time``) is compiled alone, with the same compiler the sidecar uses
(:mod:`meshward.authz.compiler`), and evaluated against the request: the trace says which
conditions held and which failed. Pure: policies and a request in, plain data out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from meshward.authz.attributes import RequestAttributes
from meshward.authz.compiler import (
    CodeBuilder,
    _all_of,
    _condition_term,
    _operation_terms,
    _source_terms,
)
from meshward.resources.authorization import AuthorizationPolicy, Condition, Operation, Rule, Source

__all__ = ["ConditionTrace", "RuleTrace", "nearest", "trace_policies"]


@dataclass(frozen=True, slots=True)
class ConditionTrace:
    field: str  # e.g. "from[0].source.principals"
    values: Any
    matched: bool

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "values": self.values, "matched": self.matched}


@dataclass(frozen=True, slots=True)
class RuleTrace:
    policy: str  # ns/name
    action: str
    rule: int
    matched: bool
    conditions: tuple[ConditionTrace, ...]

    @property
    def failed(self) -> list[str]:
        return [c.field for c in self.conditions if not c.matched]

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "action": self.action,
            "rule": self.rule,
            "matched": self.matched,
            "failed": self.failed,
            "conditions": [c.to_json() for c in self.conditions],
        }


def _evaluate(part: Source | Operation | Condition, trust_domain: str, request: RequestAttributes) -> bool:
    """Compile one condition alone (its constants in a builder of its own) and evaluate it."""
    code = CodeBuilder()
    if isinstance(part, Source):
        expression = _all_of(_source_terms(part, trust_domain, code))
    elif isinstance(part, Operation):
        expression = _all_of(_operation_terms(part, code))
    else:
        expression = _condition_term(part, trust_domain, code)
    name = code.predicate(expression)
    return bool(code.build()[name](request))


def _trace_entry(
    part: Source | Operation, label: str, trust_domain: str, request: RequestAttributes
) -> tuple[bool, list[ConditionTrace]]:
    """One ``from`` source or ``to`` operation, field by field: all its fields must hold."""
    traces = []
    for key, values in part.model_dump(by_alias=True, exclude_defaults=True).items():
        one = type(part).model_validate({key: values})
        traces.append(ConditionTrace(f"{label}.{key}", values, _evaluate(one, trust_domain, request)))
    return all(t.matched for t in traces), traces


def _trace_rule(
    rule: Rule, trust_domain: str, request: RequestAttributes
) -> tuple[bool, list[ConditionTrace]]:
    conditions: list[ConditionTrace] = []
    sources_ok: list[bool] = []
    for i, entry in enumerate(rule.from_):
        ok, traces = _trace_entry(entry.source, f"from[{i}].source", trust_domain, request)
        sources_ok.append(ok)
        conditions += traces
    operations_ok: list[bool] = []
    for i, target in enumerate(rule.to):
        ok, traces = _trace_entry(target.operation, f"to[{i}].operation", trust_domain, request)
        operations_ok.append(ok)
        conditions += traces
    when_ok = True
    for i, cond in enumerate(rule.when):
        matched = _evaluate(cond, trust_domain, request)
        values = cond.model_dump(by_alias=True, exclude_defaults=True)
        conditions.append(ConditionTrace(f"when[{i}] {cond.key}", values, matched))
        when_ok = when_ok and matched
    matched = (not sources_ok or any(sources_ok)) and (not operations_ok or any(operations_ok)) and when_ok
    return matched, conditions


def trace_policies(
    policies: Sequence[AuthorizationPolicy], trust_domain: str, request: RequestAttributes
) -> list[RuleTrace]:
    """Every rule of every policy, in evaluation order, with the outcome of each condition."""
    traces: list[RuleTrace] = []
    for p in policies:
        name = f"{p.metadata.namespace}/{p.metadata.name}"
        for index, rule in enumerate(p.spec.rules):
            matched, conditions = _trace_rule(rule, trust_domain, request)
            traces.append(RuleTrace(name, p.spec.action, index, matched, tuple(conditions)))
    return traces


def nearest(traces: Sequence[RuleTrace], action: str = "ALLOW", count: int = 3) -> list[RuleTrace]:
    """The ``action`` rules that did not match, fewest failed conditions first."""
    missed = [t for t in traces if t.action == action and not t.matched]
    return sorted(missed, key=lambda t: (len(t.failed), t.policy, t.rule))[:count]
