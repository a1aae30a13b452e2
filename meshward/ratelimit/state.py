"""The three kinds of limit state, as small mutable records with pure transition methods.

- :class:`TokenBucket` — request rate: ``rate`` per second refilled continuously, ``burst`` deep.
- :class:`TokenWindow` — LLM token budget: fixed windows aligned to the clock (a minute, an
  hour, a UTC day); a call *reserves* its estimate before it reaches the model and is
  *reconciled* with the real usage afterwards.
- :class:`ConcurrencyGate` — requests in flight; every acquire hands out a :class:`Slot`
  whose release is idempotent, so a slot is returned exactly once whatever the outcome.

No I/O and no clock of their own: ``now`` (seconds, wall clock) is passed in, so tests drive
time explicitly. Counters never go negative; a clock that steps backwards is treated as no
time passing. Parameters (rate, limit, ...) are passed on each call rather than stored, so
state survives a config change that edits them.
"""

from __future__ import annotations

import math

__all__ = [
    "ConcurrencyGate",
    "Decision",
    "Slot",
    "TokenBucket",
    "TokenWindow",
    "ceil_seconds",
]


class Decision:
    """The outcome of one check against one limit dimension.

    ``remaining`` is in the dimension's units after this check; ``reset`` is the number of
    seconds until the dimension is whole again; ``retry_after`` is how long a refused caller
    should wait (0 when allowed). ``window`` identifies a token reservation's window.
    (A plain slotted class: it is made on every check, and a frozen dataclass costs ~5x.)
    """

    __slots__ = ("allowed", "remaining", "reset", "retry_after", "window")

    def __init__(
        self, allowed: bool, remaining: int, reset: float, retry_after: float = 0.0, window: int = 0
    ) -> None:
        self.allowed = allowed
        self.remaining = remaining
        self.reset = reset
        self.retry_after = retry_after
        self.window = window

    def __repr__(self) -> str:
        return (
            f"Decision(allowed={self.allowed}, remaining={self.remaining}, reset={self.reset:.3f}, "
            f"retry_after={self.retry_after:.3f}, window={self.window})"
        )


class TokenBucket:
    """A token bucket; a fresh bucket is full."""

    __slots__ = ("stamp", "tokens")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float, rate: float, burst: float, n: float = 1.0) -> Decision:
        tokens = self.tokens
        elapsed = now - self.stamp
        if elapsed > 0:  # refill (a clock stepping back counts as no time)
            tokens += elapsed * rate
            if tokens > burst:
                tokens = burst
            self.stamp = now
        elif tokens > burst:  # burst lowered by a config change
            tokens = burst
        if tokens >= n:
            tokens -= n
            self.tokens = tokens
            return Decision(True, int(tokens), (burst - tokens) / rate)
        self.tokens = tokens
        return Decision(False, int(tokens), (burst - tokens) / rate, (n - tokens) / rate)

    def idle(self, now: float, rate: float, burst: float) -> bool:
        """True if forgetting this bucket loses nothing (it has refilled completely)."""
        return self.tokens + max(0.0, now - self.stamp) * rate >= burst


class TokenWindow:
    """Tokens used in the current fixed window of ``period`` seconds."""

    __slots__ = ("used", "window")

    def __init__(self) -> None:
        self.window = -1
        self.used = 0

    def _roll(self, now: float, period: int) -> int:
        current = int(now // period)
        if current > self.window:
            self.window = current
            self.used = 0
        return current

    def peek(self, now: float, limit: int, period: int) -> Decision:
        current = self._roll(now, period)
        reset = (current + 1) * period - now
        return Decision(self.used < limit, max(0, limit - self.used), reset, 0.0, current)

    def reserve(self, now: float, limit: int, period: int, amount: int) -> Decision:
        """Reserve ``amount`` tokens; refused when the window is spent or the amount cannot fit."""
        current = self._roll(now, period)
        reset = (current + 1) * period - now
        remaining = limit - self.used
        if remaining <= 0 or amount > remaining:
            return Decision(False, max(0, remaining), reset, reset, current)
        self.used += max(0, amount)
        return Decision(True, limit - self.used, reset, 0.0, current)

    def reconcile(self, now: float, period: int, window: int, reserved: int, actual: int) -> None:
        """Replace a reservation by the real usage.

        Inside the reservation's window the difference is applied (a refund never takes the
        count below zero). When the window has rolled over, only an overrun is charged, to
        the current window: refunds for a past window are worthless.
        """
        delta = actual - reserved
        current = self._roll(now, period)
        if window == current:
            self.used = max(0, self.used + delta)
        elif delta > 0:
            self.used += delta

    def idle(self, now: float, period: int) -> bool:
        """True once the window this record counts is over (a fresh record says the same)."""
        return int(now // period) > self.window


class Slot:
    """One acquired place in a :class:`ConcurrencyGate`; ``release`` is idempotent."""

    __slots__ = ("_gate",)

    def __init__(self, gate: ConcurrencyGate) -> None:
        self._gate: ConcurrencyGate | None = gate

    @property
    def held(self) -> bool:
        return self._gate is not None

    def release(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None and gate.in_flight > 0:
            gate.in_flight -= 1


class ConcurrencyGate:
    """Requests in flight for one key."""

    __slots__ = ("in_flight",)

    def __init__(self) -> None:
        self.in_flight = 0

    def acquire(self, cap: int) -> tuple[Decision, Slot | None]:
        if self.in_flight >= cap:
            return Decision(False, 0, 1.0, 1.0), None
        self.in_flight += 1
        return Decision(True, cap - self.in_flight, 0.0), Slot(self)

    def idle(self) -> bool:
        return self.in_flight == 0


def ceil_seconds(seconds: float) -> int:
    """Whole seconds for headers (``Retry-After``, ``t=``): rounded up, never below 0."""
    return max(0, math.ceil(seconds - 1e-9))
