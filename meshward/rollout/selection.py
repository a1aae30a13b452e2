"""Pure: a ``ModelRoute`` compiled for the hot path — which subset serves a request.

:class:`CompiledRoute` answers :meth:`~CompiledRoute.decide` from plain data (caller principal,
a header lookup, the model name, a request counter): the first matching rule's weights, else
the rollout's (``stable`` 100 - w, ``canary`` w), else everything to ``stable``.

**Sticky assignment**: a weighted choice draws a bucket in ``0..9999`` and walks the cumulative
weights (in hundredths of a percent). With ``stickyBy: source.principal`` (the default) or a
header, the bucket is a hash of that key, so one caller always lands in the same bucket: it stays
on one version while the weights hold, and a caller already on the canary stays there when the
canary's weight grows (the canary's buckets are the low ones, a growing prefix). Without a key
(``stickyBy: none``, or a missing header) buckets follow the golden-ratio sequence of a request
counter: any window of requests matches the weights to within a fraction of a percent.

**Mirroring** takes exactly ``percent`` of the requests (an accumulator, no randomness), to a
subset other than the one serving the request.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from meshward.patterns.principals import normalize_principal_pattern
from meshward.resources.modelroute import Destination, ModelRoute

__all__ = ["BUCKETS", "CompiledRoute", "Decision", "bucket_of", "sequence_bucket", "subset_of"]

BUCKETS = 10_000
_GOLDEN = 0.6180339887498949


@dataclass(slots=True)  # not frozen: built per request, and a frozen __init__ costs 3x
class Decision:
    subset: str  # the subset that serves the request
    rule: int  # index of the matching rule, -1 for the default weights
    model: str | None  # the model name to send (an alias), None to leave the request as it is
    mirror: str | None  # a subset to shadow this request to, or None


@lru_cache(maxsize=4096)  # sticky keys repeat (callers, users): hash each once
def bucket_of(key: str) -> int:
    """A stable bucket in ``0..BUCKETS-1`` for a sticky key (BLAKE2b, not Python's salted hash)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def sequence_bucket(n: int) -> int:
    """The ``n``-th bucket of a low-discrepancy sequence (golden ratio): even in any window."""
    return int(((n * _GOLDEN) % 1.0) * BUCKETS)


def subset_of(labels: Mapping[str, str], subsets: Mapping[str, Mapping[str, str]]) -> str | None:
    """The first subset whose labels all appear in ``labels``."""
    for name, wanted in subsets.items():
        if all(labels.get(k) == v for k, v in wanted.items()):
            return name
    return None


def _cumulative(route: Sequence[tuple[str, int]]) -> tuple[tuple[int, str], ...]:
    out: list[tuple[int, str]] = []
    total = 0
    for subset, weight in route:
        if weight <= 0:
            continue
        total += weight * (BUCKETS // 100)
        out.append((total, subset))
    return tuple(out)


def _choose(cumulative: tuple[tuple[int, str], ...], bucket: int, fallback: str) -> str:
    for upper, subset in cumulative:
        if bucket < upper:
            return subset
    return cumulative[-1][1] if cumulative else fallback


@dataclass(slots=True)
class _Rule:
    principals: tuple[str, ...]  # Istio-form patterns
    headers: tuple[tuple[str, str], ...]  # lower-case name, exact value
    models: frozenset[str]
    weights: tuple[tuple[int, str], ...]
    # principal → does it match (an outbound sidecar has one principal: matched once)
    _seen: dict[str, bool] = field(default_factory=dict)

    def principal_matches(self, principal: str) -> bool:
        hit = self._seen.get(principal)
        if hit is None:
            hit = any(p == "*" or fnmatch.fnmatchcase(principal, p) for p in self.principals)
            if len(self._seen) < 1024:
                self._seen[principal] = hit
        return hit

    def matches(self, principal: str, header: Callable[[str], str | None], model: str | None) -> bool:
        if self.principals and not self.principal_matches(principal):
            return False
        if self.models and model not in self.models:
            return False
        for name, value in self.headers:  # noqa: SIM110 - a loop: all() + generator costs 2x here
            if header(name) != value:
                return False
        return True


class CompiledRoute:
    """One ``ModelRoute`` ready for :meth:`decide` (built once per config generation)."""

    def __init__(self, route: ModelRoute, trust_domain: str) -> None:
        spec = route.spec
        self.name = f"{route.metadata.namespace}/{route.metadata.name}"
        self.subsets: dict[str, dict[str, str]] = {k: dict(v) for k, v in spec.subsets.items()}
        self.stable = "stable" if "stable" in self.subsets else next(iter(self.subsets))
        self.rules = tuple(
            _Rule(
                tuple(normalize_principal_pattern(p, trust_domain) for p in r.match.principals),
                tuple((k.lower(), v) for k, v in r.match.headers.items()),
                frozenset(r.match.models),
                _cumulative([(d.subset, d.weight) for d in r.route]),
            )
            for r in spec.rules
        )
        self.canary_weight = route.canary_weight if spec.rollout is not None else 0
        default: list[Destination] = [Destination(subset=self.stable, weight=100 - self.canary_weight)]
        if self.canary_weight and "canary" in self.subsets:
            default.append(Destination(subset="canary", weight=self.canary_weight))
        self.default = _cumulative([(d.subset, d.weight) for d in default])
        sticky = spec.sticky_by
        self.sticky_principal = sticky == "source.principal"
        self.sticky_header = (
            sticky[len("request.headers[") : -1].lower() if sticky.startswith("request.") else None
        )
        self.mirror_subset = spec.mirror.subset if spec.mirror else None
        self.mirror_percent = spec.mirror.percent if spec.mirror else 0.0
        self.aliases = {m: dict(v) for m, v in spec.aliases.items()}
        self.needs_model = bool(self.aliases) or any(r.models for r in self.rules)
        # how often callers report this route's outcomes: 4 reports per analysis interval
        interval = spec.rollout.interval_seconds if spec.rollout is not None else 20.0
        self.report_every = min(5.0, max(0.25, interval / 4))
        self._mirror_acc = 0.0

    def decide(
        self, principal: str, header: Callable[[str], str | None], model: str | None, n: int
    ) -> Decision:
        """The subset for one request; ``n`` is a per-route request counter (non-sticky draws)."""
        weights = self.default
        index = -1
        for i, rule in enumerate(self.rules):
            if rule.matches(principal, header, model):
                weights, index = rule.weights, i
                break
        key: str | None = None
        if self.sticky_principal:
            key = principal or None
        elif self.sticky_header is not None:
            key = header(self.sticky_header)
        bucket = bucket_of(key) if key else sequence_bucket(n)
        subset = _choose(weights, bucket, self.stable)
        alias = self.aliases.get(model, {}).get(subset) if model is not None else None
        return Decision(subset, index, alias, self._mirror(subset))

    def _mirror(self, serving: str) -> str | None:
        target = self.mirror_subset
        if target is None or target == serving:
            return None
        self._mirror_acc += self.mirror_percent
        if self._mirror_acc >= 100.0:
            self._mirror_acc -= 100.0
            return target
        return None
