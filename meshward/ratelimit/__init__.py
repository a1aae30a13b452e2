"""Rate limits and LLM token quotas (pure core + local and Redis backends).

- ``state``         token bucket, token window (reserve → reconcile), concurrency gate.
- ``keyed``         one record per key with idle eviction and a hard cap (bounded memory).
- ``compile``       RateLimitPolicy resources → matchers, key extractors, plain numbers.
- ``backend``       the backend contract and the in-sidecar backend.
- ``redis_backend`` the shared backend: atomic Lua scripts on Redis, fail open/closed.
- ``limiter``       admit a request against every applicable limit; settle afterwards.
- ``answer``        the 429/503 answer with the IETF RateLimit header fields.
- ``telemetry``     counters and Prometheus collectors (incl. ``gen_ai_client_token_usage``).

The filter that plugs this into the sidecar is :mod:`meshward.filters.ratelimit`.
"""

from meshward.ratelimit.backend import Backend, BackendUnavailable, LocalBackend
from meshward.ratelimit.compile import CompiledLimit, RequestFacts, compile_policies
from meshward.ratelimit.keyed import KeyedStates
from meshward.ratelimit.limiter import Admission, RateLimiter, Refusal
from meshward.ratelimit.state import ConcurrencyGate, Decision, TokenBucket, TokenWindow

__all__ = [
    "Admission",
    "Backend",
    "BackendUnavailable",
    "CompiledLimit",
    "ConcurrencyGate",
    "Decision",
    "KeyedStates",
    "LocalBackend",
    "RateLimiter",
    "Refusal",
    "RequestFacts",
    "TokenBucket",
    "TokenWindow",
    "compile_policies",
]
