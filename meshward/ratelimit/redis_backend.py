"""Limit state shared by every replica through Redis, one atomic Lua script per check.

Each check is one script that reads the state, decides and writes it back atomically, using
Redis' own clock (``TIME``) so replicas with skewed clocks agree; all the checks of one
request are pipelined, so a request costs ONE round trip whatever the number of limits.
Scripts are sent by SHA (``EVALSHA``) and loaded when the server answers ``NOSCRIPT``.

- bucket: a hash {tokens, stamp}, expiring once it would have refilled;
- token window: a hash {win, used}, expiring after two windows;
- concurrency: a sorted set of leases scored by expiry, so the slots of a sidecar that
  crashed mid-request expire by themselves (``lease_seconds``).

Failure handling: short connect and socket timeouts, no retries, and after a failure the
backend is considered down for ``down_seconds`` (checks raise :class:`BackendUnavailable`
at once) so a dead Redis costs microseconds per request, not a timeout each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from meshward.ratelimit.backend import BackendUnavailable, Release, RemoteCheck
from meshward.ratelimit.compile import CompiledLimit
from meshward.ratelimit.state import Decision

__all__ = ["RedisBackend"]

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS[1] bucket; ARGV rate/s, burst, n → {allowed, remaining, reset_ms, retry_ms}
BUCKET_TAKE = (
    _NOW
    + """
local rate, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local s = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens, stamp = tonumber(s[1]), tonumber(s[2])
if tokens == nil or stamp == nil then tokens = burst; stamp = now end
if now > stamp then tokens = math.min(burst, tokens + (now - stamp) * rate); stamp = now end
if tokens > burst then tokens = burst end
local allowed, retry = 0, 0
if tokens >= n then tokens = tokens - n; allowed = 1 else retry = (n - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(stamp))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, math.floor(tokens), math.ceil((burst - tokens) / rate * 1000), math.ceil(retry * 1000)}
"""
)

# KEYS[1] window; ARGV limit, period, amount → {allowed, remaining, reset_ms, win}
WINDOW_RESERVE = (
    _NOW
    + """
local limit, period, amount = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local win = math.floor(now / period)
local s = redis.call('HMGET', KEYS[1], 'win', 'used')
local used = 0
if tonumber(s[1]) == win then used = tonumber(s[2]) or 0 end
local allowed = 0
if used < limit and amount <= limit - used then used = used + amount; allowed = 1 end
redis.call('HSET', KEYS[1], 'win', string.format('%d', win), 'used', string.format('%d', used))
redis.call('PEXPIRE', KEYS[1], period * 2000)
local remaining = limit - used
if remaining < 0 then remaining = 0 end
return {allowed, remaining, math.ceil(((win + 1) * period - now) * 1000), win}
"""
)

# KEYS[1] window; ARGV period, win, delta (actual - reserved) → 1
WINDOW_RECONCILE = (
    _NOW
    + """
local period, win, delta = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local current = math.floor(now / period)
local s = redis.call('HMGET', KEYS[1], 'win', 'used')
local swin, used = tonumber(s[1]), tonumber(s[2]) or 0
if swin ~= current then used = 0 end
if win == current then
  used = used + delta
  if used < 0 then used = 0 end
elseif delta > 0 then
  used = used + delta
else
  return 0
end
redis.call('HSET', KEYS[1], 'win', string.format('%d', current), 'used', string.format('%d', used))
redis.call('PEXPIRE', KEYS[1], period * 2000)
return 1
"""
)

# KEYS[1] leases; ARGV cap, lease id, lease ms → {allowed, remaining}
SLOT_ACQUIRE = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cap, lease_ms = tonumber(ARGV[1]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
local n = redis.call('ZCARD', KEYS[1])
if n >= cap then return {0, 0} end
redis.call('ZADD', KEYS[1], now_ms + lease_ms, ARGV[2])
redis.call('PEXPIRE', KEYS[1], lease_ms)
return {1, cap - n - 1}
"""


class RedisBackend:
    """A Redis-backed :class:`~meshward.ratelimit.backend.Backend`."""

    name = "redis"
    synchronous = False

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.25,
        down_seconds: float = 1.0,
        lease_seconds: float = 600.0,
        prefix: str = "meshward:rl:",
    ) -> None:
        self.url = url
        self.client: Redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self.prefix = prefix
        self.down_seconds = down_seconds
        self.lease_ms = int(lease_seconds * 1000)
        self.down_until = 0.0
        self.failures = 0
        self._bucket = self.client.register_script(BUCKET_TAKE)
        self._reserve = self.client.register_script(WINDOW_RESERVE)
        self._reconcile = self.client.register_script(WINDOW_RECONCILE)
        self._acquire = self.client.register_script(SLOT_ACQUIRE)
        self._background: set[asyncio.Task[Any]] = set()

    def prepare(self, limits: list[CompiledLimit]) -> None:
        """Nothing to bind: the parameters travel with each call."""

    def take_now(self, limit: CompiledLimit, key: str) -> Decision:
        raise TypeError("RedisBackend is asynchronous: await take()")

    def acquire_now(self, limit: CompiledLimit, key: str) -> tuple[Decision, Release | None]:
        raise TypeError("RedisBackend is asynchronous: await acquire()")

    def reserve_now(self, limit: CompiledLimit, key: str, amount: int) -> Decision:
        raise TypeError("RedisBackend is asynchronous: await reserve()")

    def _key(self, limit: CompiledLimit, dimension: str, key: str) -> str:
        return f"{self.prefix}{limit.id}:{dimension}:{key}"

    async def _call(self, call: Awaitable[Any]) -> Any:
        if self.down_until and time.monotonic() < self.down_until:
            if asyncio.iscoroutine(call):
                call.close()
            raise BackendUnavailable(f"rate-limit store {self._where()} is down (recent failure)")
        try:
            result = await call
        except (TimeoutError, RedisError, OSError) as exc:
            self.failures += 1
            self.down_until = time.monotonic() + self.down_seconds
            raise BackendUnavailable(
                f"rate-limit store {self._where()} unreachable: {type(exc).__name__}"
            ) from exc
        self.down_until = 0.0
        return result

    def _where(self) -> str:
        kw = self.client.connection_pool.connection_kwargs
        return f"redis {kw.get('host', '?')}:{kw.get('port', '?')}"

    async def take(self, limit: CompiledLimit, key: str) -> Decision:
        return (await self.check_batch([(limit, "requests", key, 1, "")]))[0][0]

    async def reserve(self, limit: CompiledLimit, key: str, amount: int) -> Decision:
        return (await self.check_batch([(limit, "tokens", key, amount, "")]))[0][0]

    async def acquire(self, limit: CompiledLimit, key: str, lease: str) -> tuple[Decision, Release | None]:
        return (await self.check_batch([(limit, "concurrency", key, 1, lease)]))[0]

    async def check_batch(self, ops: Sequence[RemoteCheck]) -> list[tuple[Decision, Release | None]]:
        """Run several checks in ONE round trip (a pipeline of script calls), answers in order.

        Every check runs, whatever the others answer (as Envoy's global rate limit counts every
        descriptor); the limiter gives back slots and reservations of a refused request.
        """
        calls: list[tuple[AsyncScript, list[str], list[Any]]] = []
        for limit, dim, key, amount, lease in ops:
            if dim == "requests":
                calls.append(
                    (self._bucket, [self._key(limit, "req", key)], [limit.rate, limit.burst, amount])
                )
            elif dim == "tokens":
                rkey = self._key(limit, "tok", key)
                calls.append((self._reserve, [rkey], [limit.token_limit, limit.token_period, amount]))
            else:
                rkey = self._key(limit, "conc", key)
                calls.append((self._acquire, [rkey], [limit.concurrency, lease, self.lease_ms]))
        replies = await self._call(self._pipeline(calls))
        out: list[tuple[Decision, Release | None]] = []
        for (limit, dim, key, _amount, lease), reply in zip(ops, replies, strict=True):
            if dim == "requests":
                allowed, remaining, reset_ms, retry_ms = reply
                out.append((Decision(bool(allowed), int(remaining), reset_ms / 1000, retry_ms / 1000), None))
            elif dim == "tokens":
                allowed, remaining, reset_ms, win = reply
                reset = reset_ms / 1000
                out.append(
                    (
                        Decision(bool(allowed), int(remaining), reset, 0.0 if allowed else reset, int(win)),
                        None,
                    )
                )
            else:
                allowed, remaining = reply
                if allowed:
                    out.append(
                        (
                            Decision(True, int(remaining), 0.0),
                            self._releaser(self._key(limit, "conc", key), lease),
                        )
                    )
                else:
                    out.append((Decision(False, 0, 1.0, 1.0), None))
        return out

    async def _pipeline(self, calls: list[tuple[AsyncScript, list[str], list[Any]]]) -> list[Any]:
        """EVALSHA each call in one pipeline; scripts the server lacks are loaded and re-run alone."""
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _attempt in range(2):
            pipe = self.client.pipeline(transaction=False)
            for i in todo:
                script, keys, args = calls[i]
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            replies = await pipe.execute(raise_on_error=False)
            missing = []
            for i, reply in zip(todo, replies, strict=True):
                if isinstance(reply, NoScriptError):
                    missing.append(i)  # not run: safe to run again
                elif isinstance(reply, Exception):
                    raise reply
                else:
                    results[i] = reply
            if not missing:
                return results
            for script in {id(calls[i][0]): calls[i][0] for i in missing}.values():
                script.sha = await self.client.script_load(script.script)
            todo = missing
        raise RedisError("rate-limit scripts could not be loaded")

    def _releaser(self, rkey: str, lease: str) -> Release:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._spawn(self.client.zrem(rkey, lease))

        return release

    def reconcile(self, limit: CompiledLimit, key: str, window: int, reserved: int, actual: int) -> None:
        if actual == reserved:
            return
        self._spawn(
            self._reconcile(
                keys=[self._key(limit, "tok", key)], args=[limit.token_period, window, actual - reserved]
            )
        )

    def _spawn(self, call: Awaitable[Any]) -> None:
        """Run a settling write in the background; a failure is counted (leases expire anyway)."""

        async def settle() -> None:
            try:
                await call
            except (TimeoutError, RedisError, OSError):
                self.failures += 1

        try:
            task = asyncio.get_running_loop().create_task(settle())
        except RuntimeError:  # no loop (shutdown): the lease TTL cleans up
            if asyncio.iscoroutine(call):
                call.close()
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for background settling writes (tests, shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()
        await self.client.aclose()
