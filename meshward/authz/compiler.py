"""Compile ``AuthorizationPolicy`` rules into Python functions, once per config generation.

Each rule becomes one boolean expression over the request attributes ``r`` — set lookups,
``startswith``/``endswith`` with tuples, precompiled regexes, integer IP ranges — and a rule
set becomes one function (``if <rule 0>: return 0`` ...). The generated source only ever
contains identifiers chosen here (``r``, its attribute names, ``_c0``, ``_c1``, ...); every value
taken from a policy is bound as a constant in the function's namespace and never spliced into
source text, so a policy cannot inject code. Evaluating a request therefore costs one Python
call per rule set, allocates nothing and compiles nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from types import CodeType
from typing import Any, Final, cast

from meshward.authz.attributes import RequestAttributes
from meshward.patterns.ipblocks import ip_ranges
from meshward.patterns.paths import is_template, template_regex
from meshward.patterns.principals import normalize_principal_pattern
from meshward.patterns.strings import StringMatcher, is_exact
from meshward.patterns.timewindow import parse_time_window
from meshward.resources.authorization import Condition, Operation, Rule, Source, claim_path

__all__ = [
    "CodeBuilder",
    "Predicate",
    "RuleIndexFunction",
    "principal_keys",
    "rule_expression",
    "rule_uses_model",
]

Predicate = Callable[[RequestAttributes], bool]
RuleIndexFunction = Callable[[RequestAttributes], int]  # index of the first matching rule or -1

_HEADER_PREFIX: Final = "request.headers["
_EMPTY: Final = frozenset({None, ""})


class CodeBuilder:
    """Collects constants and function definitions, then compiles them in one namespace."""

    def __init__(self) -> None:
        self._namespace: dict[str, Any] = {"__builtins__": {}, "_EMPTY": _EMPTY}
        self._lines: list[str] = []
        self._count = 0

    def const(self, value: object) -> str:
        name = f"_c{self._count}"
        self._count += 1
        self._namespace[name] = value
        return name

    def predicate(self, expression: str) -> str:
        """Define ``def _pN(r): return <expression>``; returns its name."""
        name = self.const(None)
        self._lines += [f"def {name}(r):", f"    return {expression}"]
        return name

    def first_match(self, expressions: Sequence[tuple[str, int]]) -> str:
        """Define a function returning the value paired with the first true expression, or -1."""
        name = self.const(None)
        prelude, hoisted = _hoist([e for e, _ in expressions])
        self._lines.append(f"def {name}(r):")
        self._lines += [f"    {line}" for line in prelude]
        for expression, (_, value) in zip(hoisted, expressions, strict=True):
            self._lines += [f"    if {expression}:", f"        return {int(value)}"]
        self._lines.append("    return -1")
        return name

    def function_body(self, body: Sequence[str], result: str) -> str:
        """Define ``def _cN(r):`` with ``body`` lines returning ``result``; returns its name."""
        name = self.const(None)
        prelude, hoisted = _hoist(list(body))
        self._lines.append(f"def {name}(r):")
        self._lines += [f"    {line}" for line in [*prelude, *hoisted]]
        self._lines.append(f"    return {result}")
        return name

    def build(self) -> dict[str, Any]:
        """Compile everything defined so far; returns the namespace (functions by name)."""
        exec(_code("\n".join(self._lines) + "\n"), self._namespace)
        return self._namespace

    @staticmethod
    def function(namespace: dict[str, Any], name: str) -> RuleIndexFunction:
        return cast(RuleIndexFunction, namespace[name])


@lru_cache(maxsize=8)
def _code(source: str) -> CodeType:
    """Generated source, compiled once: most new generations leave a sidecar's policies as they
    were (an endpoint came or went, another kind changed), and Python's ``compile`` of the same
    text was the largest cost of taking a generation. The code is immutable; each build executes
    it in its own namespace (the constants it refers to are the new generation's)."""
    return compile(source, "<authz-policies>", "exec")


# Calls worth making once per generated function when its rules use them repeatedly.
_HOISTABLE: Final = (("r.source_ip_int()", "_sip"), ("r.remote_ip_int()", "_rip"))


def _hoist(lines: list[str]) -> tuple[list[str], list[str]]:
    """Compute repeated IP lookups once at the top of a generated function."""
    prelude: list[str] = []
    for call, local in _HOISTABLE:
        if sum(line.count(call) for line in lines) > 1:
            prelude.append(f"{local} = {call}")
            lines = [line.replace(call, local) for line in lines]
    return prelude, lines


def rule_expression(rule: Rule, trust_domain: str, code: CodeBuilder) -> str:
    """The rule as one boolean expression: a source (if any), an operation (if any), every
    condition. An empty rule is ``True``."""
    parts: list[str] = []
    sources = [_source_terms(f.source, trust_domain, code) for f in rule.from_]
    if sources and all(sources):  # an entry without fields matches any caller
        parts.append(_any_of([_all_of(s) for s in sources]))
    operations = [_operation_terms(t.operation, code) for t in rule.to]
    if operations and all(operations):
        parts.append(_any_of([_all_of(o) for o in operations]))
    parts.extend(_condition_term(c, trust_domain, code) for c in rule.when)
    return _all_of(parts)


def principal_keys(rule: Rule, trust_domain: str) -> frozenset[str] | None:
    """The exact principals one of which a request must have for ``rule`` to match, or None
    when the rule does not pin its callers to a finite set."""
    if not rule.from_:
        return None
    keys: set[str] = set()
    for f in rule.from_:
        values = [normalize_principal_pattern(p, trust_domain) for p in f.source.principals]
        if not values or not all(is_exact(v) for v in values):
            return None
        keys.update(values)
    return frozenset(keys)


def rule_uses_model(rule: Rule) -> bool:
    """Does the rule look at the model (which may need the request body)?"""
    if any(t.operation.models or t.operation.not_models for t in rule.to):
        return True
    return any(c.key == "request.model" for c in rule.when)


# --- fields -------------------------------------------------------------------------------


def _source_terms(s: Source, trust_domain: str, code: CodeBuilder) -> list[str]:
    terms: list[str] = []
    principals = [normalize_principal_pattern(v, trust_domain) for v in s.principals]
    not_principals = [normalize_principal_pattern(v, trust_domain) for v in s.not_principals]
    _strings(terms, "r.principal", principals, not_principals, code)
    _strings(terms, "r.namespace", s.namespaces, s.not_namespaces, code)
    _strings(terms, "r.request_principal", s.request_principals, s.not_request_principals, code)
    _ips(terms, "r.source_ip_int()", s.ip_blocks, s.not_ip_blocks, code)
    _ips(terms, "r.remote_ip_int()", s.remote_ip_blocks, s.not_remote_ip_blocks, code)
    return terms


def _operation_terms(o: Operation, code: CodeBuilder) -> list[str]:
    terms: list[str] = []
    _strings(terms, "r.method", o.methods, o.not_methods, code)
    if o.paths:
        terms.append(_path_match(o.paths, code))
    if o.not_paths:
        terms.append(f"not {_path_match(o.not_paths, code)}")
    _ports(terms, "r.port", o.ports, o.not_ports, code)
    if o.ai_operations:
        terms.append(f"r.operation in {code.const(frozenset(o.ai_operations))}")
    if o.not_ai_operations:
        terms.append(f"r.operation not in {code.const(frozenset(o.not_ai_operations))}")
    _strings(terms, "r.model", o.models, o.not_models, code)
    hosts = [h.lower() for h in o.hosts]
    _strings(terms, "r.host_lower", hosts, [h.lower() for h in o.not_hosts], code)
    return terms


def _condition_term(c: Condition, trust_domain: str, code: CodeBuilder) -> str:
    key = c.key
    terms: list[str] = []
    if key == "request.time":
        windows = tuple(parse_time_window(v) for v in c.values)
        excluded = tuple(parse_time_window(v) for v in c.not_values)
        if windows:
            terms.append(f"{code.const(_any_window(windows))}(r.now)")
        if excluded:
            terms.append(f"not {code.const(_any_window(excluded))}(r.now)")
    elif key in ("source.ip", "remote.ip"):
        attr = "r.source_ip_int()" if key == "source.ip" else "r.remote_ip_int()"
        _ips(terms, attr, c.values, c.not_values, code)
    elif key == "destination.port":
        _ports(terms, "r.port", c.values, c.not_values, code)
    elif key.startswith(_HEADER_PREFIX):
        name = code.const(key[len(_HEADER_PREFIX) : -1].lower())
        _strings(terms, f"r.headers.get({name})", c.values, c.not_values, code)
    elif key == "source.principal":
        values = [normalize_principal_pattern(v, trust_domain) for v in c.values]
        not_values = [normalize_principal_pattern(v, trust_domain) for v in c.not_values]
        _strings(terms, "r.principal", values, not_values, code)
    elif key == "request.auth.audiences":
        _each_strings(terms, "r.auth_audiences", c.values, c.not_values, code)
    elif (path := claim_path(key)) is not None:
        _each_strings(terms, f"r.claim({code.const(path)})", c.values, c.not_values, code)
    else:
        attr = {
            "source.namespace": "r.namespace",
            "request.model": "r.model",
            "request.auth.principal": "r.request_principal",
            "request.auth.presenter": "r.auth_presenter",
        }[key]
        _strings(terms, attr, c.values, c.not_values, code)
    return _all_of(terms)


# --- building blocks ----------------------------------------------------------------------


def _strings(
    terms: list[str], attr: str, values: Sequence[str], not_values: Sequence[str], code: CodeBuilder
) -> None:
    if values:
        terms.append(_string_match(attr, values, code))
    if not_values:
        terms.append(f"not {_string_match(attr, not_values, code)}")


def _each_strings(
    terms: list[str], attr: str, values: Sequence[str], not_values: Sequence[str], code: CodeBuilder
) -> None:
    """For a list attribute (audiences, a list claim): some element matches ``values`` and none
    matches ``notValues`` (Istio's meaning for multi-valued claims)."""
    some = code.const(any)  # generated code runs without builtins
    if values:
        terms.append(f"{some}({_string_match('_e', values, code)} for _e in {attr})")
    if not_values:
        terms.append(f"not {some}({_string_match('_e', not_values, code)} for _e in {attr})")


def _string_match(attr: str, values: Iterable[str], code: CodeBuilder) -> str:
    """Istio's string forms (:class:`StringMatcher`) as an expression; a missing value never
    matches, presence (``*``) needs a non-empty value."""
    m = StringMatcher(values)
    if m.presence:
        return f"({attr} not in _EMPTY)"
    if m.exact_only:
        return f"({attr} in {code.const(m.exact)})"
    alternatives: list[str] = []
    if m.exact:
        alternatives.append(f"_v in {code.const(m.exact)}")
    if m.prefixes:
        alternatives.append(f"_v.startswith({code.const(m.prefixes)})")
    if m.suffixes:
        alternatives.append(f"_v.endswith({code.const(m.suffixes)})")
    return f"((_v := {attr}) is not None and ({' or '.join(alternatives)}))"


def _ips(
    terms: list[str], attr: str, values: Sequence[str], not_values: Sequence[str], code: CodeBuilder
) -> None:
    if values:
        terms.append(_ip_match(attr, values))
    if not_values:
        terms.append(f"not {_ip_match(attr, not_values)}")


def _ip_match(attr: str, blocks: Sequence[str]) -> str:
    """Integer range comparisons, inline (the bounds are ints computed here, safe as literals)."""
    ranges = " or ".join(f"{int(low)} <= _i <= {int(high)}" for low, high in ip_ranges(blocks))
    return f"((_i := {attr}) is not None and ({ranges}))"


def _path_match(patterns: Sequence[str], code: CodeBuilder) -> str:
    """Plain patterns inline like any string; URI templates as one precompiled regex."""
    plain = [p for p in patterns if not is_template(p)]
    templates = [p for p in patterns if is_template(p)]
    alternatives: list[str] = []
    if plain:
        alternatives.append(_string_match("r.path", plain, code))
    if templates:
        alternatives.append(f"({code.const(template_regex(templates).fullmatch)}(r.path) is not None)")
    return alternatives[0] if len(alternatives) == 1 else f"({' or '.join(alternatives)})"


def _ports(
    terms: list[str], attr: str, values: Sequence[str], not_values: Sequence[str], code: CodeBuilder
) -> None:
    if values:
        terms.append(f"{attr} in {code.const(frozenset(int(p) for p in values))}")
    if not_values:
        terms.append(f"{attr} not in {code.const(frozenset(int(p) for p in not_values))}")


def _any_window(windows: tuple[Any, ...]) -> Callable[[float], bool]:
    contains = tuple(w.contains for w in windows)
    return lambda now: any(c(now) for c in contains)


def _all_of(terms: list[str]) -> str:
    if not terms:
        return "True"
    if len(terms) == 1:
        return terms[0]
    return " and ".join(f"({t})" for t in terms)


def _any_of(terms: list[str]) -> str:
    if len(terms) == 1:
        return terms[0]
    return " or ".join(f"({t})" for t in terms)
