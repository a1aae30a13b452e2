"""Key sets for ``jwtRules``: inline ``jwks``, or ``jwksUri`` fetched and cached per process.

Key rotation: an identity provider publishes its next key before it signs with it. The cache
refreshes every :data:`REFRESH_SECONDS` (20 min, Istio's default), and at once when a token names
a ``kid`` it has not seen (at most once per :data:`MIN_REFETCH_SECONDS`, 5 s, so a flood of tokens
with made-up ``kid`` values cannot make the sidecar hammer the provider). A failed fetch keeps
the last good keys; with no keys at all every token is refused (fail closed, 401), while requests
without a token still pass to authorization, as in Istio.

Fetches run in a worker thread (``httpx``, bounded size and time), never on the event loop. The
cache is per process and keyed by URI, so a new config generation does not refetch.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Final

import httpx
from jwt import PyJWK

from meshward.authn.jwt import keys_from_jwks

__all__ = ["MAX_JWKS_BYTES", "MIN_REFETCH_SECONDS", "REFRESH_SECONDS", "RemoteKeySet", "remote_key_set"]

REFRESH_SECONDS: Final = 20 * 60.0
MIN_REFETCH_SECONDS: Final = 5.0
MAX_JWKS_BYTES: Final = 256 * 1024
FETCH_TIMEOUT: Final = 5.0


@dataclass
class RemoteKeySet:
    """The keys behind one ``jwksUri``; ``version`` grows each time they change."""

    uri: str
    keys: tuple[PyJWK, ...] = ()
    version: int = 0
    fetched_at: float | None = None
    last_attempt: float = float("-inf")
    last_error: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _inflight: asyncio.Future[None] | None = field(default=None, repr=False)

    def stale(self, now: float) -> bool:
        return self.fetched_at is None or now - self.fetched_at >= REFRESH_SECONDS

    def may_refetch(self, now: float) -> bool:
        return now - self.last_attempt >= MIN_REFETCH_SECONDS

    def fetch(self) -> None:
        """Blocking: GET the JWKS and install its usable keys (keeps the old ones on failure)."""
        with self._lock:
            self.last_attempt = time.monotonic()
            try:
                with (
                    httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=False, trust_env=False) as client,
                    client.stream("GET", self.uri, headers={"accept": "application/json"}) as resp,
                ):
                    if resp.status_code != 200:
                        raise ValueError(f"HTTP {resp.status_code}")
                    body = b""
                    for chunk in resp.iter_bytes():
                        body += chunk
                        if len(body) > MAX_JWKS_BYTES:
                            raise ValueError(f"larger than {MAX_JWKS_BYTES} bytes")
                keys = keys_from_jwks(body.decode("utf-8"))
            except (httpx.HTTPError, ValueError, UnicodeDecodeError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                return
            self.last_error = ""
            self.fetched_at = time.monotonic()
            if [k._jwk_data for k in keys] != [k._jwk_data for k in self.keys]:
                self.keys = keys
                self.version += 1

    async def refresh(self) -> None:
        """Fetch in a worker thread; concurrent callers share one fetch."""
        if self._inflight is not None:
            await asyncio.shield(self._inflight)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.run_in_executor(None, self.fetch)
        self._inflight = fut
        try:
            await asyncio.shield(fut)
        finally:
            self._inflight = None


_REGISTRY: dict[str, RemoteKeySet] = {}


def remote_key_set(uri: str) -> RemoteKeySet:
    """The process-wide cache entry of ``uri`` (created empty on first use)."""
    found = _REGISTRY.get(uri)
    if found is None:
        found = _REGISTRY[uri] = RemoteKeySet(uri)
    return found
