"""RateLimitPolicy resources → the hot-path form: matchers, key extractors, plain numbers.

Everything that can be decided at config time is: which policies select this workload,
identities normalized to Istio's principal form, Istio's string patterns compiled into
:class:`~meshward.patterns.strings.StringMatcher` (exact / prefix / suffix / presence), rates
turned into per-second floats. At request time a limit answers two pure questions: does it
apply to this request (:meth:`CompiledLimit.applies`) and which bucket (:meth:`CompiledLimit.key_of`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from meshward.authn.enduser import claim_value
from meshward.config.selection import select_policies
from meshward.config.snapshot import MeshSnapshot
from meshward.patterns.principals import normalize_principal_pattern
from meshward.patterns.strings import StringMatcher
from meshward.ratelimit.keyed import bounded_key
from meshward.resources.ratelimit import PERIOD_SECONDS, RateLimit, RateLimitPolicy

__all__ = [
    "CompiledLimit",
    "CompiledPolicy",
    "Dimension",
    "RequestFacts",
    "compile_limit",
    "compile_policies",
    "selected_policies",
]

Dimension = Literal["requests", "tokens", "concurrency"]


@dataclass(slots=True)
class RequestFacts:
    """What matching and keying read about a request (filled from the RequestContext)."""

    principal: str | None  # Istio principal form, None for plaintext callers
    namespace: str | None
    method: str
    path: str
    headers: dict[str, str]
    model: str | None
    operation: str
    end_user: str | None = None  # request.auth.principal (JWT iss/sub or an API key's principal)
    claims: Mapping[str, Any] = field(default_factory=dict)  # a verified JWT's claims


@dataclass(slots=True)
class CompiledLimit:
    """One limit of one policy, ready for the hot path."""

    policy: str  # "ns/name"
    name: str
    backend: str  # "local" or a redis URL
    key_kind: Literal["", "principal", "model", "header", "end_user", "claim"]
    header: str  # lower-case header name when key_kind == "header"
    mode: Literal["enforce", "shadow"]
    failure_mode: Literal["closed", "open"]
    claim: tuple[str, ...] = ()  # the claim path when key_kind == "claim"
    principals: StringMatcher | None = None
    namespaces: StringMatcher | None = None
    models: StringMatcher | None = None
    operations: frozenset[str] | None = None
    paths: StringMatcher | None = None
    methods: frozenset[str] | None = None
    # requests
    rate: float = 0.0  # tokens per second
    burst: float = 0.0
    requests_quota: int = 0
    requests_window: int = 0
    # tokens
    token_limit: int = 0
    token_period: int = 0
    token_count: Literal["total", "input", "output"] = "total"
    # concurrency
    concurrency: int = 0
    dimensions: tuple[Dimension, ...] = field(default_factory=tuple)
    id: str = ""  # "ns/policy/limit": names this limit's state in every backend

    def __post_init__(self) -> None:
        self.id = f"{self.policy}/{self.name}"

    @property
    def shadow(self) -> bool:
        return self.mode == "shadow"

    def applies(self, facts: RequestFacts, model_unknown: bool = False) -> bool:
        """Does this limit apply? ``model_unknown``: the model is not read yet, assume it matches."""
        if self.methods is not None and facts.method not in self.methods:
            return False
        if self.paths is not None and not self.paths.matches(facts.path):
            return False
        if self.operations is not None and facts.operation not in self.operations:
            return False
        if self.models is not None and not model_unknown and not self.models.matches(facts.model):
            return False
        if self.principals is not None and not self.principals.matches(facts.principal):
            return False
        return self.namespaces is None or self.namespaces.matches(facts.namespace)

    def key_of(self, facts: RequestFacts) -> str:
        kind = self.key_kind
        if kind == "":
            return ""
        if kind == "principal":
            value = facts.principal or "-"
        elif kind == "model":
            value = facts.model or "-"
        elif kind == "end_user":
            value = facts.end_user or "-"
        elif kind == "claim":
            value = ",".join(claim_value(facts.claims, self.claim)) or "-"
        else:
            value = facts.headers.get(self.header, "-")
        return bounded_key(value)

    def quota(self, dimension: Dimension) -> int:
        """The ``q`` of this limit's dimension (quota units per window, or slots)."""
        if dimension == "requests":
            return self.requests_quota
        if dimension == "tokens":
            return self.token_limit
        return self.concurrency

    def policy_item(self, dimension: Dimension) -> str:
        """This limit as one item of the IETF ``RateLimit-Policy`` field."""
        if dimension == "requests":
            return f'"{self.name}";q={self.requests_quota};w={self.requests_window}'
        if dimension == "tokens":
            return f'"{self.name}";q={self.token_limit};w={self.token_period};qu="tokens"'
        return f'"{self.name}";q={self.concurrency};qu="concurrent-requests"'


@dataclass(slots=True)
class CompiledPolicy:
    ref: str  # "ns/name"
    backend: str
    limits: list[CompiledLimit]


def _pattern(values: Sequence[str]) -> StringMatcher | None:
    return StringMatcher(values) if values else None


def compile_limit(policy: str, backend: str, spec: RateLimit, trust_domain: str) -> CompiledLimit:
    key = spec.key
    header = ""
    key_kind: Literal["", "principal", "model", "header", "end_user", "claim"]
    claim: tuple[str, ...] = ()
    if key == "request.auth.principal":
        key_kind = "end_user"
    elif key.startswith("request.auth.claims["):
        key_kind = "claim"
        claim = tuple(key[len("request.auth.claims[") : -1].split("]["))
    elif key == "source.principal":
        key_kind = "principal"
    elif key == "request.model":
        key_kind = "model"
    elif key.startswith("request.headers["):
        key_kind = "header"
        header = key[len("request.headers[") : -1].lower()
    else:
        key_kind = ""
    limit = CompiledLimit(
        policy=policy,
        name=spec.name,
        backend=backend,
        key_kind=key_kind,
        header=header,
        claim=claim,
        mode=spec.mode,
        failure_mode=spec.effective_failure_mode,
    )
    m = spec.match
    if m is not None:
        if m.principals:
            limit.principals = StringMatcher(
                normalize_principal_pattern(p, trust_domain) for p in m.principals
            )
        limit.namespaces = _pattern(m.namespaces)
        limit.models = _pattern(m.models)
        limit.operations = frozenset(m.ai_operations) if m.ai_operations else None
        limit.paths = _pattern(m.paths)
        limit.methods = frozenset(x.upper() for x in m.methods) if m.methods else None
    dims: list[Dimension] = []
    if spec.concurrency is not None:
        limit.concurrency = spec.concurrency
        dims.append("concurrency")
    if spec.requests is not None:
        window = PERIOD_SECONDS[spec.requests.per]
        limit.rate = spec.requests.limit / window
        limit.burst = float(spec.requests.burst or spec.requests.limit)
        limit.requests_quota = spec.requests.limit
        limit.requests_window = window
        dims.append("requests")
    if spec.tokens is not None:
        limit.token_limit = spec.tokens.limit
        limit.token_period = PERIOD_SECONDS[spec.tokens.per]
        limit.token_count = spec.tokens.count
        dims.append("tokens")
    limit.dimensions = tuple(dims)
    return limit


def selected_policies(snapshot: MeshSnapshot) -> list[RateLimitPolicy]:
    """The RateLimitPolicies that apply to the workload: its namespace (or the root one) + selector."""
    return select_policies(
        snapshot.of_kind(RateLimitPolicy.kind_name),
        snapshot.workload,
        snapshot.mesh.root_namespace,
        RateLimitPolicy,
    )


def compile_policies(snapshot: MeshSnapshot) -> list[CompiledPolicy]:
    out: list[CompiledPolicy] = []
    for res in selected_policies(snapshot):
        spec = res.spec
        ref = f"{res.metadata.namespace}/{res.metadata.name}"
        limits = [compile_limit(ref, spec.backend, lim, snapshot.trust_domain) for lim in spec.limits]
        out.append(CompiledPolicy(ref, spec.backend, limits))
    return out
