"""Where limit state lives: the contract every backend keeps, and the in-sidecar one.

A backend answers three checks (take a request token, acquire a concurrency slot, reserve
LLM tokens) and settles afterwards (release the slot, reconcile the reservation). Checks are
``async`` because the shared backend is a Redis round trip; settling is synchronous because
it runs from ``on_complete`` (a shared backend schedules its write in the background).

A backend that cannot answer raises :class:`BackendUnavailable`; the caller applies the
limit's ``failureMode``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from meshward.ratelimit.compile import CompiledLimit, Dimension
from meshward.ratelimit.keyed import KeyedStates
from meshward.ratelimit.state import ConcurrencyGate, Decision, TokenBucket, TokenWindow

__all__ = ["Backend", "BackendUnavailable", "Clock", "LocalBackend", "Release", "RemoteCheck"]

Clock = Callable[[], float]
# (limit, dimension, key, amount: request cost or tokens to reserve, lease name)
RemoteCheck = tuple[CompiledLimit, Dimension, str, int, str]
S = TypeVar("S")
Release = Callable[[], None]


class BackendUnavailable(Exception):
    """The shared rate-limit store did not answer in time (not the caller's fault)."""


class Backend(Protocol):
    name: str
    # True for an in-process backend: the limiter calls ``take_now`` & co. without awaiting.
    synchronous: bool

    def prepare(self, limits: list[CompiledLimit]) -> None:
        """Bind a new generation's limits (state for unchanged limit ids is kept)."""

    async def take(self, limit: CompiledLimit, key: str) -> Decision: ...

    async def acquire(
        self, limit: CompiledLimit, key: str, lease: str
    ) -> tuple[Decision, Release | None]: ...

    async def reserve(self, limit: CompiledLimit, key: str, amount: int) -> Decision: ...

    def reconcile(self, limit: CompiledLimit, key: str, window: int, reserved: int, actual: int) -> None: ...

    async def check_batch(self, ops: Sequence[RemoteCheck]) -> list[tuple[Decision, Release | None]]:
        """Several checks at once (one round trip for a shared store), answers in order."""
        ...

    def take_now(self, limit: CompiledLimit, key: str) -> Decision: ...

    def acquire_now(self, limit: CompiledLimit, key: str) -> tuple[Decision, Release | None]: ...

    def reserve_now(self, limit: CompiledLimit, key: str, amount: int) -> Decision: ...


class LocalBackend:
    """Limit state in this sidecar's memory; survives config swaps (kept in the runtime's ``RateLimitShared``)."""

    name = "local"
    synchronous = True

    def __init__(self, clock: Clock = time.time, max_keys: int = 10_000) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self.buckets: dict[str, KeyedStates[TokenBucket]] = {}
        self.windows: dict[str, KeyedStates[TokenWindow]] = {}
        self.gates: dict[str, KeyedStates[ConcurrencyGate]] = {}

    def prepare(self, limits: list[CompiledLimit]) -> None:
        """Bind this generation's limits; state of limits no longer configured is dropped."""
        for limit in limits:
            self._bind(limit)
        for stores, dim in (
            (self.buckets, "requests"),
            (self.windows, "tokens"),
            (self.gates, "concurrency"),
        ):
            keep = {lim.id for lim in limits if dim in lim.dimensions}
            for gone in [limit_id for limit_id in stores if limit_id not in keep]:
                del stores[gone]  # in-flight requests hold their own references (slots, holds)

    def _bind(self, limit: CompiledLimit) -> None:
        rate, burst, period = limit.rate, limit.burst, limit.token_period
        if "requests" in limit.dimensions:

            def new_bucket(now: float) -> TokenBucket:
                return TokenBucket(burst, now)

            def bucket_idle(b: TokenBucket, now: float) -> bool:
                return b.idle(now, rate, burst)

            self._store(self.buckets, limit.id, new_bucket, bucket_idle)
        if "tokens" in limit.dimensions:

            def window_idle(w: TokenWindow, now: float) -> bool:
                return w.idle(now, period)

            self._store(self.windows, limit.id, lambda _now: TokenWindow(), window_idle)
        if "concurrency" in limit.dimensions:
            self._store(self.gates, limit.id, lambda _now: ConcurrencyGate(), lambda g, _now: g.idle())

    def _store(
        self,
        stores: dict[str, KeyedStates[S]],
        limit_id: str,
        factory: Callable[[float], S],
        idle: Callable[[S, float], bool],
    ) -> None:
        store = stores.get(limit_id)
        if store is None:
            stores[limit_id] = KeyedStates(factory, idle, self.max_keys)
        else:
            store.configure(factory, idle)

    # The checks are synchronous underneath; the async wrappers keep one interface.
    def take_now(self, limit: CompiledLimit, key: str) -> Decision:
        now = self.clock()
        return self.buckets[limit.id].get(key, now).take(now, limit.rate, limit.burst)

    def acquire_now(self, limit: CompiledLimit, key: str) -> tuple[Decision, Release | None]:
        gate = self.gates[limit.id].get(key, self.clock())
        decision, slot = gate.acquire(limit.concurrency)
        return decision, (slot.release if slot is not None else None)

    def reserve_now(self, limit: CompiledLimit, key: str, amount: int) -> Decision:
        now = self.clock()
        window = self.windows[limit.id].get(key, now)
        return window.reserve(now, limit.token_limit, limit.token_period, amount)

    async def take(self, limit: CompiledLimit, key: str) -> Decision:
        return self.take_now(limit, key)

    async def acquire(self, limit: CompiledLimit, key: str, lease: str) -> tuple[Decision, Release | None]:
        return self.acquire_now(limit, key)

    async def reserve(self, limit: CompiledLimit, key: str, amount: int) -> Decision:
        return self.reserve_now(limit, key, amount)

    async def check_batch(self, ops: Sequence[RemoteCheck]) -> list[tuple[Decision, Release | None]]:
        out: list[tuple[Decision, Release | None]] = []
        for limit, dim, key, amount, _lease in ops:
            if dim == "requests":
                out.append((self.take_now(limit, key), None))
            elif dim == "tokens":
                out.append((self.reserve_now(limit, key, amount), None))
            else:
                out.append(self.acquire_now(limit, key))
        return out

    def reconcile(self, limit: CompiledLimit, key: str, window: int, reserved: int, actual: int) -> None:
        store = self.windows.get(limit.id)
        if store is None:  # the limit was removed while this request was in flight
            return
        now = self.clock()
        store.get(key, now).reconcile(now, limit.token_period, window, reserved, actual)
