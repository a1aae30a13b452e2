"""Does one authorization rule match everything another matches? (syntactic, conservative)

:func:`rule_covers` answers True only when it can prove that every request matched by rule
``b`` is matched by rule ``a``: each constraint of ``a`` is implied by the constraints of
``b`` (value patterns by :func:`pattern_covers`, IP blocks by range containment, negative
lists and ``when`` conditions by inclusion). When in doubt it answers False, so a rule is
never reported shadowed without reason. Used to find shadowed and redundant policies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from meshward.patterns.ipblocks import ip_ranges
from meshward.patterns.paths import template_regex
from meshward.patterns.principals import normalize_principal_pattern
from meshward.resources.authorization import Condition, Operation, Rule, Source

__all__ = ["path_covers", "pattern_covers", "rule_covers"]

_T = TypeVar("_T")


def pattern_covers(a: str, b: str) -> bool:
    """Every value matched by pattern ``b`` (exact, ``prefix*``, ``*suffix``, ``*``) matches ``a``."""
    if a == "*":
        return True
    if b == "*":
        return False
    if a.endswith("*"):
        prefix = a[:-1]
        return (b.endswith("*") and b[:-1].startswith(prefix)) or (
            not b.startswith("*") and not b.endswith("*") and b.startswith(prefix)
        )
    if a.startswith("*"):
        suffix = a[1:]
        return (b.startswith("*") and b[1:].endswith(suffix)) or (
            not b.startswith("*") and not b.endswith("*") and b.endswith(suffix)
        )
    return a == b


def path_covers(a: str, b: str) -> bool:
    """Like :func:`pattern_covers`, with URI templates (``{*}``, ``{**}``) on either side."""
    a_template, b_template = "{" in a, "{" in b
    if a == b:
        return True
    if a_template and not b_template:
        if b == "*" or b.startswith("*") or b.endswith("*"):
            return False
        return template_regex([a]).fullmatch(b) is not None
    if b_template:
        if a_template:
            return a.endswith("{**}") and b.startswith(a[: -len("{**}")]) and "{" not in a[: -len("{**}")]
        literal = b.split("{", 1)[0]
        return a == "*" or (a.endswith("*") and not a.startswith("*") and literal.startswith(a[:-1]))
    return pattern_covers(a, b)


def _list_covers(a: Sequence[_T], b: Sequence[_T], covers: Callable[[_T, _T], bool]) -> bool:
    """``a`` (any of) constrains nothing, or each value ``b`` allows is allowed by ``a``."""
    if not a:
        return True
    return bool(b) and all(any(covers(x, y) for x in a) for y in b)


def _excludes_at_least(a_not: Sequence[str], b_not: Sequence[str]) -> bool:
    """``a`` excludes values by ``a_not``: safe when ``b`` excludes at least those."""
    return set(a_not) <= set(b_not)


def _ips_cover(a: Sequence[str], b: Sequence[str]) -> bool:
    if not a:
        return True
    if not b:
        return False
    outer = ip_ranges(a)
    return all(any(lo <= x and y <= hi for lo, hi in outer) for x, y in ip_ranges(b))


def _source_covers(a: Source, b: Source, trust_domain: str) -> bool:
    def principals(values: Sequence[str]) -> list[str]:
        return [normalize_principal_pattern(v, trust_domain) for v in values]

    return (
        _list_covers(principals(a.principals), principals(b.principals), pattern_covers)
        and _excludes_at_least(principals(a.not_principals), principals(b.not_principals))
        and _list_covers(a.request_principals, b.request_principals, pattern_covers)
        and _excludes_at_least(a.not_request_principals, b.not_request_principals)
        and _list_covers(a.namespaces, b.namespaces, pattern_covers)
        and _excludes_at_least(a.not_namespaces, b.not_namespaces)
        and _ips_cover(a.ip_blocks, b.ip_blocks)
        and _excludes_at_least(a.not_ip_blocks, b.not_ip_blocks)
        and _ips_cover(a.remote_ip_blocks, b.remote_ip_blocks)
        and _excludes_at_least(a.not_remote_ip_blocks, b.not_remote_ip_blocks)
    )


def _operation_covers(a: Operation, b: Operation) -> bool:
    def same(x: str, y: str) -> bool:
        return x == y

    return (
        _list_covers([h.lower() for h in a.hosts], [h.lower() for h in b.hosts], pattern_covers)
        and _excludes_at_least([h.lower() for h in a.not_hosts], [h.lower() for h in b.not_hosts])
        and _list_covers(a.ports, b.ports, same)
        and _excludes_at_least(a.not_ports, b.not_ports)
        and _list_covers(a.methods, b.methods, pattern_covers)
        and _excludes_at_least(a.not_methods, b.not_methods)
        and _list_covers(a.paths, b.paths, path_covers)
        and _excludes_at_least(a.not_paths, b.not_paths)
        and _list_covers(a.models, b.models, pattern_covers)
        and _excludes_at_least(a.not_models, b.not_models)
        and _list_covers(a.ai_operations, b.ai_operations, same)
        and _excludes_at_least(a.not_ai_operations, b.not_ai_operations)
    )


def _condition_key(c: Condition) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    return (c.key, tuple(sorted(c.values)), tuple(sorted(c.not_values)))


def rule_covers(a: Rule, b: Rule, trust_domain: str) -> bool:
    """Every request rule ``b`` matches, rule ``a`` matches too (provably)."""
    froms_ok = not a.from_ or (
        bool(b.from_)
        and all(any(_source_covers(x.source, y.source, trust_domain) for x in a.from_) for y in b.from_)
    )
    tos_ok = not a.to or (
        bool(b.to) and all(any(_operation_covers(x.operation, y.operation) for x in a.to) for y in b.to)
    )
    when_ok = {_condition_key(c) for c in a.when} <= {_condition_key(c) for c in b.when}
    return froms_ok and tos_ok and when_ok
