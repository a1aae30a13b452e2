"""Admit or refuse one request against every limit that applies, and settle afterwards.

For each applicable limit, in policy order, the dimensions are checked concurrency first
(cheapest to give back), then the request rate, then the token budget (a reservation of
the prompt estimate plus the output cap). Local limits are checked one by one and the
first refusal by an enforcing limit stops the walk; limits on a shared store are checked
afterwards, all in one round trip. Either way a refused request gives back what it holds
(slots, reservations), so it leaks nothing. A shadow limit is checked the same way, but
its refusals are only recorded.

:meth:`RateLimiter.settle` runs exactly once per admitted request, whatever happened
(response, error, abort, local reply): it releases every slot and replaces each token
reservation by the real usage.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from meshward.ai.types import TokenUsage
from meshward.ratelimit.backend import Backend, BackendUnavailable, Release, RemoteCheck
from meshward.ratelimit.compile import CompiledLimit, Dimension, RequestFacts
from meshward.ratelimit.state import Decision

__all__ = ["Admission", "RateLimiter", "Refusal", "TokenHold", "reservation_for", "usage_for"]

_PROCESS = secrets.token_hex(6)  # makes lease names unique across sidecars sharing a store


@dataclass(slots=True)
class Refusal:
    """A limit said no (or could not answer and fails closed: ``unavailable``)."""

    limit: CompiledLimit
    dimension: Dimension
    decision: Decision
    unavailable: bool = False


@dataclass(slots=True)
class TokenHold:
    """A token reservation to reconcile when the response is over."""

    limit: CompiledLimit
    backend: Backend
    key: str
    window: int
    reserved: int


_NONE: list[Any] = []  # the shared empty list: replaced, never appended to


class Admission:
    """What one request was granted: holds to settle, and any refusals.

    Fields default to class attributes (shared, never mutated: lists are replaced, not
    appended to), so admitting a request that holds nothing costs one tiny object.
    """

    refusal: Refusal | None = None
    shadow_refusals: list[Refusal] = _NONE
    failed_open: list[CompiledLimit] = _NONE
    releases: list[Release] = _NONE
    holds: list[TokenHold] = _NONE
    # The enforced limit with the smallest share left, advertised on the response.
    tightest: tuple[CompiledLimit, Dimension, Decision] | None = None
    tightest_share = float("inf")
    settled = False

    def __init__(self, lease: str) -> None:
        self.lease = lease


def reservation_for(limit: CompiledLimit, prompt_estimate: int, max_output: int | None) -> int:
    """Tokens to reserve before the call, in the units the budget counts."""
    count = limit.token_count
    output = max_output or 0
    if count == "input":
        return prompt_estimate
    if count == "output":
        return output
    return prompt_estimate + output


def usage_for(limit: CompiledLimit, usage: TokenUsage) -> int:
    count = limit.token_count
    if count == "input":
        return usage.input
    if count == "output":
        return usage.output
    return usage.input + usage.output


class RateLimiter:
    """The limits of one config generation, each bound to its backend."""

    def __init__(self, limits: list[CompiledLimit], backends: dict[str, Backend]) -> None:
        self.limits = limits
        self.backends = backends
        for name, backend in backends.items():
            backend.prepare([lim for lim in limits if lim.backend == name])
        self._bound = [(lim, backends[lim.backend]) for lim in limits]

    async def admit(
        self, facts: RequestFacts, lease: str, prompt_estimate: int = 0, max_output: int | None = None
    ) -> Admission:
        adm = Admission(lease)
        remote: list[tuple[CompiledLimit, Backend, Dimension, str]] | None = None
        for limit, backend in self._bound:
            if not limit.applies(facts):
                continue
            key = limit.key_of(facts)
            for dim in limit.dimensions:
                if not backend.synchronous:  # shared store: batched below, one round trip
                    if remote is None:
                        remote = []
                    remote.append((limit, backend, dim, key))
                    continue
                if dim == "requests":  # the common case, inlined
                    decision = backend.take_now(limit, key)
                    if decision.allowed and not limit.shadow:
                        share = decision.remaining / limit.requests_quota
                        if share < adm.tightest_share:
                            adm.tightest_share = share
                            adm.tightest = (limit, dim, decision)
                        continue
                else:
                    decision = self._check_now(adm, limit, backend, dim, key, prompt_estimate, max_output)
                if not self._judge(adm, limit, dim, decision, False):
                    self.settle(adm, None)  # give back what this request holds
                    return adm
        if remote is not None and not await self._admit_remote(adm, remote, prompt_estimate, max_output):
            self.settle(adm, None)
        return adm

    def _judge(
        self, adm: Admission, limit: CompiledLimit, dim: Dimension, decision: Decision, unavailable: bool
    ) -> bool:
        """Record one answer; False when it refuses the request (an enforcing limit said no)."""
        if decision.allowed:
            if not limit.shadow:
                share = decision.remaining / limit.quota(dim)
                if share < adm.tightest_share:
                    adm.tightest_share = share
                    adm.tightest = (limit, dim, decision)
            return True
        refusal = Refusal(limit, dim, decision, unavailable)
        if limit.shadow:
            adm.shadow_refusals = [*adm.shadow_refusals, refusal]
            return True
        if adm.refusal is None:
            adm.refusal = refusal
        return False

    async def _admit_remote(
        self,
        adm: Admission,
        remote: list[tuple[CompiledLimit, Backend, Dimension, str]],
        prompt_estimate: int,
        max_output: int | None,
    ) -> bool:
        ok = True
        for backend in {id(b): b for _, b, _, _ in remote}.values():
            ops: list[RemoteCheck] = []
            for limit, b, dim, key in remote:
                if b is backend:
                    amount = reservation_for(limit, prompt_estimate, max_output) if dim == "tokens" else 1
                    ops.append((limit, dim, key, amount, lease_id(adm, limit)))
            try:
                answers = await backend.check_batch(ops)
            except BackendUnavailable:
                for limit, dim, _key, _amount, _lease in ops:
                    if limit.failure_mode == "open":
                        if limit not in adm.failed_open:
                            adm.failed_open = [*adm.failed_open, limit]
                    elif not self._judge(adm, limit, dim, Decision(False, 0, 1.0, 1.0), True):
                        ok = False
                continue
            for (limit, dim, key, amount, _lease), (decision, release) in zip(ops, answers, strict=True):
                if release is not None:
                    _add_release(adm, release)
                if dim == "tokens" and decision.allowed:
                    _add_hold(adm, TokenHold(limit, backend, key, decision.window, amount))
                if not self._judge(adm, limit, dim, decision, False):
                    ok = False
        return ok

    def _check_now(
        self,
        adm: Admission,
        limit: CompiledLimit,
        backend: Backend,
        dim: Dimension,
        key: str,
        prompt_estimate: int,
        max_output: int | None,
    ) -> Decision:
        """The same checks as :meth:`_check`, without awaiting (in-process backend)."""
        if dim == "requests":
            return backend.take_now(limit, key)
        if dim == "concurrency":
            decision, release = backend.acquire_now(limit, key)
            if release is not None:
                _add_release(adm, release)
            return decision
        amount = reservation_for(limit, prompt_estimate, max_output)
        decision = backend.reserve_now(limit, key, amount)
        if decision.allowed:
            _add_hold(adm, TokenHold(limit, backend, key, decision.window, amount))
        return decision

    def settle(self, adm: Admission, usage: TokenUsage | None) -> None:
        """Release every slot and reconcile every reservation (``usage`` None: nothing used)."""
        if adm.settled:
            return
        adm.settled = True
        if adm.releases is _NONE and adm.holds is _NONE:
            return
        releases, adm.releases = adm.releases, _NONE
        for release in releases:
            release()
        holds, adm.holds = adm.holds, _NONE
        if holds:
            used = usage if usage is not None else TokenUsage()
            for hold in holds:
                hold.backend.reconcile(
                    hold.limit, hold.key, hold.window, hold.reserved, usage_for(hold.limit, used)
                )


def _add_release(adm: Admission, release: Release) -> None:
    if adm.releases is _NONE:
        adm.releases = []
    adm.releases.append(release)


def _add_hold(adm: Admission, hold: TokenHold) -> None:
    if adm.holds is _NONE:
        adm.holds = []
    adm.holds.append(hold)


def lease_id(adm: Admission, limit: CompiledLimit) -> str:
    """A lease name unique to this request and limit (the Redis concurrency set's member)."""
    return f"{_PROCESS}:{adm.lease}:{limit.id}"
