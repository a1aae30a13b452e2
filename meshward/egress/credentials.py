"""The sidecar's egress credentials: fetched from the control plane, held in memory only.

A value is fetched the first time a call needs it (over the sidecar's mTLS identity, see
``ControlAgent.fetch_secret``: the control plane releases it only to a workload an
EgressPolicy allows to reach a service using it), then served from memory and refreshed in
the background once it is older than :data:`REFRESH_SECONDS` — that is how ``meshward secret
set`` (rotation) reaches running sidecars without restarts. A refusal (the policy no longer
allows it, the secret was removed) drops the value; an unreachable control plane keeps the
last value (last-known-good, as for config).

Why not in the snapshot: snapshots are cached on disk (``snapshot.json``) and shown by the
admin ``/config_dump`` and ``meshward get``; a credential must be in none of them. This cache
is never written anywhere and nothing prints it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

from meshward.filters.base import SecretFetch, SidecarRuntime

__all__ = ["REFRESH_SECONDS", "CredentialCache", "credential_cache"]

log = logging.getLogger("meshward.egress")

REFRESH_SECONDS = float(os.environ.get("MESHWARD_SECRET_REFRESH", "5"))
FETCH_TIMEOUT = 10.0


class _Entry:
    __slots__ = ("fetched", "refreshing", "value")

    def __init__(self, value: str, fetched: float) -> None:
        self.value = value
        self.fetched = fetched
        self.refreshing: asyncio.Task[None] | None = None


class CredentialCache:
    """Secret values by name for one sidecar process (see the module docstring)."""

    def __init__(self, runtime: SidecarRuntime, clock: Callable[[], float] = time.monotonic) -> None:
        self._runtime = runtime
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._pending: dict[str, asyncio.Future[str | None]] = {}

    def _fetcher(self) -> SecretFetch | None:
        """``runtime.secret_fetch``: set by the sidecar process that talks to the control plane."""
        return self._runtime.secret_fetch

    async def get(self, name: str) -> str | None:
        """The value, or None when this sidecar cannot have it (the caller answers 503)."""
        entry = self._entries.get(name)
        if entry is not None:
            if self._clock() - entry.fetched > REFRESH_SECONDS and entry.refreshing is None:
                entry.refreshing = asyncio.get_running_loop().create_task(self._refresh(name, entry))
            return entry.value
        pending = self._pending.get(name)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._pending[name] = future
        try:
            value = await self._fetch(name)
            if value is not None:
                self._entries[name] = _Entry(value, self._clock())
            future.set_result(value)
            return value
        finally:
            del self._pending[name]

    async def _fetch(self, name: str) -> str | None:
        fetch = self._fetcher()
        if fetch is None:
            log.warning("egress: no control plane to fetch credential %r from", name)
            return None
        try:
            return await asyncio.wait_for(fetch(name), FETCH_TIMEOUT)
        except Exception as exc:  # refused, unreachable, timed out: never the value in the log
            log.warning("egress: credential %r unavailable: %s", name, _reason(exc))
            return None

    async def _refresh(self, name: str, entry: _Entry) -> None:
        fetch = self._fetcher()
        try:
            if fetch is None:
                return
            try:
                value = await asyncio.wait_for(fetch(name), FETCH_TIMEOUT)
            except Exception as exc:
                if getattr(exc, "status", None) in (403, 404):  # no longer allowed or removed
                    log.warning("egress: credential %r withdrawn: %s", name, _reason(exc))
                    self._entries.pop(name, None)
                else:  # the control plane is away: keep the last value, retry soon
                    entry.fetched = self._clock() - REFRESH_SECONDS + 1.0
                return
            entry.value = value
            entry.fetched = self._clock()
        finally:
            entry.refreshing = None

    def forget(self) -> None:
        self._entries.clear()


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__


def credential_cache(runtime: SidecarRuntime) -> CredentialCache:
    """The process's cache (a runtime service: kept across config generations)."""
    return runtime.service(CredentialCache, lambda: CredentialCache(runtime))
