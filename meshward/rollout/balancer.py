"""Pure: which endpoint of a service serves the next request, and which endpoints are ejected.

**Least request, ties broken round robin.** Each endpoint counts the requests this sidecar has
in flight to it; the next request goes to the endpoint with the fewest, and among equals to the
one after the last pick. Model services have very uneven request costs (a 2,000-token chat
completion next to a health probe): plain round robin keeps sending every Nth request to a
replica that is still busy with a long generation, while least request steers around it.
When nothing is in flight (light traffic, the tests) it degrades to exact round robin, so a
fresh sidecar spreads load evenly. A full scan is fine: a service has a handful of endpoints
(Envoy switches to power-of-two-choices only for large sets).

**Outlier detection** (Envoy's ``consecutive_5xx`` / ``consecutive_gateway_failure``): an
endpoint that fails ``consecutive`` times in a row (5xx answers or connect failures) is
ejected for ``base_ejection * 2**(n-1)`` seconds (n = its ejections so far, capped at
``max_ejection``), then returns on probation: one more failure ejects it again, a success
resets its failure count and shortens its next back-off. The last available endpoints are never all ejected (Envoy's panic mode):
when every candidate is ejected, all of them are used rather than failing closed on a healthy
service that merely had a bad minute.

No I/O, no clocks: callers pass ``now`` (the loop's monotonic time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Balancer", "EndpointHealth", "OutlierPolicy"]


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    consecutive: int = 3
    base_ejection: float = 5.0
    max_ejection: float = 300.0


@dataclass(slots=True)
class EndpointHealth:
    """What one sidecar knows about one endpoint (survives config generations)."""

    in_flight: int = 0
    failures: int = 0  # consecutive
    ejections: int = 0
    ejected_until: float = 0.0
    requests: int = 0
    errors: int = 0

    def available(self, now: float) -> bool:
        return now >= self.ejected_until


class Balancer:
    """Endpoint state keyed by address (``"host:port"``) plus the picking rule."""

    def __init__(self, policy: OutlierPolicy | None = None) -> None:
        self.policy = policy or OutlierPolicy()
        self.health: dict[str, EndpointHealth] = {}
        self._last = -1

    def state(self, key: str) -> EndpointHealth:
        h = self.health.get(key)
        if h is None:
            if len(self.health) > 4096:  # endpoints come and go with generations: stay bounded
                self.health = {k: v for k, v in self.health.items() if v.in_flight}
            h = self.health[key] = EndpointHealth()
        return h

    def pick(
        self, candidates: Sequence[str], now: float, exclude: frozenset[str] = frozenset(), panic: bool = True
    ) -> int:
        """Index in ``candidates`` of the endpoint to use; -1 when there is none.

        ``exclude``: endpoints this request already tried (a retry goes elsewhere when it can).
        ``panic``: when every candidate is ejected, use them anyway (else -1: the caller has a
        wider set to fall back to).
        """
        n = len(candidates)
        if n == 0:
            return -1
        health = self.health
        best = -1
        best_load = 1 << 62
        any_available = False
        start = self._last + 1
        for step in range(n):
            i = (start + step) % n
            key = candidates[i]
            h = health.get(key)
            if h is not None and now < h.ejected_until:
                continue
            any_available = True
            if key in exclude:
                continue
            load = h.in_flight if h is not None else 0
            if load < best_load:
                best, best_load = i, load
        if best < 0:
            if (any_available and exclude) or not panic:
                return -1  # every healthy endpoint was tried already
            # panic: all ejected, use them anyway (those not tried yet)
            untried = [i for i in range(n) if candidates[i] not in exclude]
            if not untried:
                return -1
            best = min(untried, key=lambda i: (self.state(candidates[i]).in_flight, (i - start) % n))
        self._last = best
        return best

    def started(self, key: str) -> None:
        h = self.health.get(key) or self.state(key)
        h.in_flight += 1
        h.requests += 1

    def finished(self, key: str, ok: bool, now: float) -> bool:
        """Record the outcome of a request to ``key``; True when it got ejected by it."""
        h = self.health.get(key) or self.state(key)
        if h.in_flight > 0:
            h.in_flight -= 1
        return self._outcome(h, ok, now)

    def outcome(self, key: str, ok: bool, now: float) -> bool:
        """An outcome without an in-flight request (e.g. a failed connect)."""
        return self._outcome(self.health.get(key) or self.state(key), ok, now)

    def _outcome(self, h: EndpointHealth, ok: bool, now: float) -> bool:
        if ok:
            if h.failures:
                h.failures = 0
            if h.ejections and now >= h.ejected_until:
                h.ejections -= 1  # back on probation and answering: the back-off decays
            return False
        h.errors += 1
        h.failures += 1
        if h.failures >= self.policy.consecutive and now >= h.ejected_until:
            h.ejections += 1
            p = self.policy
            h.ejected_until = now + min(p.max_ejection, p.base_ejection * 2 ** (h.ejections - 1))
            h.failures = 0
            return True
        return False

    def ejected(self, now: float) -> list[str]:
        return sorted(k for k, h in self.health.items() if now < h.ejected_until)
