"""The sidecar's side of the control plane: identity, config watch, ACK/NACK, cache, renewal.

:class:`ControlAgent` keeps one sidecar supplied, as tasks on the sidecar's own event loop
(:meth:`ControlAgent.start`), talking to the control plane with
:class:`~meshward.control.asyncclient.AsyncControlClient`:

- **identity**: a key made here (it never leaves this process; cached 0600 with the chain in
  ``<dir>/svid.pem``) and a CSR; the first SVID is bought with a join token, later ones are
  renewed over mTLS with the current SVID at half-life (:mod:`meshward.identity.renewal`). A
  cached SVID that is still valid is used as is, so a restarted sidecar needs neither a token
  nor the control plane.
- **config**: a long-poll watch carrying the digest of the last snapshot received; each new
  snapshot is parsed and compiled in an executor (DLP's pattern database included: never on
  the loop), then swapped in on the loop (``Sidecar.apply``: the sidecar's
  ``Watch[CompiledConfig]``), cached in ``<dir>/snapshot.json`` and ACKed;
  a snapshot that cannot be compiled is NACKed with the reason and the old config stays.
  Reconnects back off exponentially with full jitter (:mod:`meshward.retry`); the sidecar keeps
  serving its last good config meanwhile, until its certificate expires.
- **trust bundle**: the watch also carries the digest of the bundle the sidecar holds; after a CA
  rotation the control plane pushes the new bundle, which the sidecar trusts at once (peers with
  new-root SVIDs verify from the next connection on), and the SVID is renewed right away under
  the new CA, well before the old root leaves the bundle.

The agent also registers the sidecar's inbound listener, which puts it in every other sidecar's
services table, and unregisters it when stopped. :mod:`meshward.proxy.runner` is the process
that runs a ``Sidecar`` fed by this agent (``meshward proxy --control``: what ``meshward up``
and ``meshward run`` start).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509

from meshward.config.snapshot import MeshSnapshot, SnapshotDecoder
from meshward.control.asyncclient import AsyncControlClient
from meshward.control.client import ControlRefused, ControlUnavailable
from meshward.identity.keys import generate_key, key_pem, make_csr, write_private, write_public
from meshward.identity.renewal import renew_at
from meshward.identity.spiffe import SpiffeId
from meshward.proxy.compiled import CompiledConfig
from meshward.retry import Backoff
from meshward.tls.contexts import client_context
from meshward.tls.control import bundle_digest

__all__ = [
    "AgentConfig",
    "ControlAgent",
    "IdentityError",
    "SidecarTarget",
    "Svid",
]

log = logging.getLogger(__name__)

WATCH_SECONDS = 25.0
MAX_BACKOFF = 5.0


class IdentityError(Exception):
    """No usable SVID: none cached and the join token was refused or the control plane is away."""


class _Refused(Exception):
    """The sidecar refused generation ``generation`` (``error`` says why): NACK it."""

    def __init__(self, generation: int, error: Exception) -> None:
        super().__init__(str(error))
        self.generation, self.error = generation, error


class SidecarTarget(Protocol):
    """What the agent feeds: the data plane's ``Sidecar`` (or anything that compiles snapshots).

    ``compile`` runs in an executor (one at a time) and raises to refuse; ``apply`` and
    ``set_identity`` run on the loop."""

    def set_identity(self, chain_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> object: ...
    def compile(self, snapshot: MeshSnapshot) -> CompiledConfig: ...
    def apply(self, compiled: CompiledConfig) -> None: ...


@dataclass(frozen=True)
class Svid:
    """An SVID with its key (PEM) and the trust bundle it came with."""

    key_pem: bytes
    chain_pem: bytes
    bundle_pem: bytes

    @property
    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.chain_pem)[0]

    @property
    def not_after(self) -> dt.datetime:
        return self.leaf.not_valid_after_utc

    def renew_at(self) -> dt.datetime:
        """Half-life, as the SPIFFE and Istio agents do."""
        leaf = self.leaf
        return renew_at(leaf.not_valid_before_utc, leaf.not_valid_after_utc)

    def valid(self, margin: float = 5.0) -> bool:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=margin) < self.not_after


@dataclass(frozen=True)
class AgentConfig:
    control_url: str
    identity: SpiffeId  # what the SVID says (the workload's service account)
    workload: str  # NS/NAME of the Workload this sidecar serves
    sidecar_id: str  # NS/NAME or NS/NAME#INSTANCE (unique among running sidecars)
    directory: Path  # cache: svid.pem (0600), bundle.pem, snapshot.json
    bootstrap_bundle_pem: bytes  # trust anchor for the first contact with the control plane
    token: str | None = None
    # Forget this sidecar's registration and ACKs when it stops even without an inbound listener
    # (an extra worker of a sidecar: ``<sidecar-id>#w<N>``, see meshward.proxy.runner).
    unregister_on_stop: bool = False


class ControlAgent:
    """Feeds one sidecar from the control plane; see the module docstring.

    Every coroutine runs on the sidecar's loop: ``await obtain_identity()`` and
    ``await initial_snapshot()`` before the sidecar serves, then :meth:`start` (the watch and
    renewal tasks) and, at the end, ``await stop()``.
    """

    def __init__(self, config: AgentConfig, target: SidecarTarget) -> None:
        self.config = config
        self.target = target
        self.directory = config.directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        self.svid: Svid | None = None
        self.digest = ""
        self.generation = 0
        self.last_error = ""
        self.inbound: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._wake: asyncio.Event | None = None  # stop, or a new trust bundle: renew without waiting
        self._renewed = False  # set by the renew task: the watch reconnects with the new SVID
        self._renew_now = False  # a new trust bundle: renew without waiting for half-life
        self._clients: tuple[Svid | None, AsyncControlClient] | None = None  # see _shared_client
        self._decoder = SnapshotDecoder()  # in the executor, one snapshot at a time
        self._ack_due: int | None = None  # a generation swapped in, ACKed by the next watch

    # -- files -------------------------------------------------------------------------------------
    @property
    def svid_path(self) -> Path:
        return self.directory / "svid.pem"

    @property
    def snapshot_path(self) -> Path:
        return self.directory / "snapshot.json"

    def _cached_svid(self) -> Svid | None:
        try:
            data = self.svid_path.read_bytes()
            bundle = (self.directory / "bundle.pem").read_bytes()
        except OSError:
            return None
        marker = b"-----BEGIN CERTIFICATE-----"
        cut = data.find(marker)
        if cut <= 0:
            return None
        svid = Svid(data[:cut], data[cut:], bundle)
        try:
            leaf = svid.leaf
            uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            if [u.value for u in uris] != [self.config.identity.uri] or not svid.valid():
                return None
        except (ValueError, x509.ExtensionNotFound):
            return None
        return svid

    def _store_svid(self, svid: Svid) -> None:
        write_private(self.svid_path, svid.key_pem + svid.chain_pem)  # one atomic file: never a mismatch
        write_public(self.directory / "bundle.pem", svid.bundle_pem)

    def cached_snapshot(self) -> MeshSnapshot | None:
        try:
            doc = json.loads(self.snapshot_path.read_text())
            snapshot = self._decoder.decode(doc["snapshot"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        self.digest = str(doc.get("digest", ""))
        return snapshot

    # -- talking to the control plane ----------------------------------------------------------------
    def _client(self, timeout: float = 10.0, anonymous: bool = False) -> AsyncControlClient:
        td = self.config.identity.trust_domain
        svid = self.svid
        if anonymous or svid is None:
            context = client_context(None, None, self.config.bootstrap_bundle_pem)
        else:
            context = client_context(svid.chain_pem, svid.key_pem, self._control_trust(svid))
        return AsyncControlClient(self.config.control_url, td, context, timeout=timeout)

    def _shared_client(self) -> AsyncControlClient:
        """The kept-alive client for short requests (ACKs, audit, secrets, reports): one
        connection, callers take turns; replaced when the SVID is."""
        held = self._clients
        if held is None or held[0] is not self.svid:
            if held is not None:
                asyncio.get_running_loop().create_task(held[1].close())
            held = self._clients = (self.svid, self._client(timeout=30.0))
        return held[1]

    def _control_trust(self, svid: Svid) -> bytes:
        """Roots that verify the control plane: our SVID's bundle and the one we were started with.

        After a root rotation made while this sidecar was away (its cached bundle has only the old
        root), the bundle it was restarted with is the one that verifies the control plane's
        new-root certificate; the control plane then pushes the current bundle down the watch.
        """
        held, boot = svid.bundle_pem, self.config.bootstrap_bundle_pem
        return held if boot.strip() in held else held.rstrip(b"\n") + b"\n" + boot

    async def _offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Blocking work (key generation, compiling, fsync'd files) off the loop."""
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _request_svid(self, token: str | None) -> Svid:
        key = await self._offload(generate_key)
        csr = make_csr(key, self.config.identity).decode("ascii")
        client = self._client(anonymous=token is not None)
        try:
            if token is not None:
                _, body = await client.request("POST", "/v1/identity/sign", {"csr": csr, "token": token})
            else:
                _, body = await client.request("POST", "/v1/identity/renew", {"csr": csr})
        finally:
            await client.close()
        return Svid(key_pem(key), body["chain"].encode("ascii"), body["bundle"].encode("ascii"))

    async def obtain_identity(self, join_timeout: float = 20.0) -> Svid:
        """The cached SVID if still valid, else a new one bought with the join token.

        While the control plane is not reachable yet (it may be starting alongside this sidecar)
        the CSR is retried with backoff for up to ``join_timeout`` seconds.
        """
        svid = self._cached_svid()
        if svid is None:
            if not self.config.token:
                raise IdentityError(
                    f"no valid cached SVID in {self.directory} and no join token for {self.config.identity.uri}"
                )
            deadline = time.monotonic() + join_timeout
            delay = Backoff(base=0.05, cap=1.0)
            while True:
                try:
                    svid = await self._request_svid(self.config.token)
                    break
                except ControlRefused as exc:
                    raise IdentityError(f"the control plane refused the join token: {exc}") from None
                except ControlUnavailable as exc:
                    if time.monotonic() >= deadline:
                        raise IdentityError(str(exc)) from None
                    await asyncio.sleep(delay.next())
            await self._offload(self._store_svid, svid)
        self.svid = svid
        self.target.set_identity(svid.chain_pem, svid.key_pem, svid.bundle_pem)
        return svid

    async def initial_snapshot(self, timeout: float = 5.0) -> MeshSnapshot:
        """The current config from the control plane, else the cached last good one."""
        try:
            client = self._client(timeout=timeout + 5)
            try:
                answer = await self._watch_once(client, "", timeout)
                if answer is not None and (snapshot := await self._apply(answer, client)) is not None:
                    return snapshot
            finally:
                await client.close()
        except (ControlUnavailable, ControlRefused) as exc:
            self.last_error = str(exc)
        cached: MeshSnapshot | None = await self._offload(self.cached_snapshot)
        if cached is None:
            raise IdentityError(
                f"no config: control plane unreachable ({self.last_error}) and nothing cached"
            )
        self.target.apply(await self._offload(self.target.compile, cached))
        self.generation = cached.generation
        return cached

    async def _watch_once(
        self, client: AsyncControlClient, have: str, timeout: float, bundle: str | None = None
    ) -> tuple[dict[str, Any], bytes] | None:
        """The watch's answer, parsed and as received (a snapshot's answer is, byte for byte,
        what ``snapshot.json`` caches); None when nothing changed in ``timeout`` seconds."""
        params: dict[str, Any] = {"workload": self.config.workload, "have": have, "timeout": timeout}
        if bundle is not None:
            params["bundle"] = bundle
        due = self._ack_due
        if due is not None:
            params.update(ack=due, sidecar=self.config.sidecar_id)
        query = urllib.parse.urlencode(params)
        try:
            status, raw, body = await client.request_raw("GET", f"/v1/watch?{query}", timeout=timeout + 10)
        except ControlRefused:
            self._ack_due = None  # refused with its ACK (e.g. 429): the next watch goes without it
            raise
        self._ack_due = None  # answered: the control plane has it (unreachable: it stays due)
        return (body, raw) if status == 200 and body else None

    def _compile(self, doc: dict[str, Any]) -> CompiledConfig:
        """In the executor: parse one snapshot (a malformed one raises as it is), then compile it
        (a refusal raises :class:`_Refused`: NACK)."""
        snapshot = self._decoder.decode(doc)
        try:
            return self.target.compile(snapshot)
        except Exception as exc:
            raise _Refused(snapshot.generation, exc) from exc

    async def _apply(
        self,
        answer: tuple[dict[str, Any], bytes],
        client: AsyncControlClient | None,
        *,
        ack_later: bool = False,
    ) -> MeshSnapshot | None:
        """Compile a watched snapshot off the loop, swap it in on the loop; ACK (and cache) it
        and return it, or NACK it (the old one stays) and return None.

        ``ack_later``: the ACK rides on the next watch request (see ``_watch_once``), which the
        watch loop sends at once; a NACK is always posted, with its reason."""
        body, raw = answer
        doc, digest = body["snapshot"], str(body["digest"])
        self.digest = digest
        try:
            compiled: CompiledConfig = await self._offload(self._compile, doc)
            try:
                self.target.apply(compiled)
            except Exception as exc:
                raise _Refused(compiled.generation, exc) from exc
        except _Refused as refused:  # the sidecar could not take it: its reason goes to the operator
            error = refused.error
            reason = f"{type(error).__name__}: {error}"
            log.warning("generation %d rejected: %s", refused.generation, reason)
            if client is not None:
                await self._ack(client, refused.generation, False, reason)
            return None
        snapshot = compiled.snapshot
        self.generation = snapshot.generation
        # Cached before the ACK: whatever the ACK's fate, a restart resumes from this generation.
        # Not fsync'd (one per generation and sidecar): after a power loss the cache may hold the
        # generation before, or nothing readable (a restart then waits for the control plane).
        await self._offload(functools.partial(write_public, durable=False), self.snapshot_path, raw)
        if ack_later:
            self._ack_due = snapshot.generation
        elif client is not None:
            await self._ack(client, snapshot.generation, True, "")
        return snapshot

    async def _ack(self, client: AsyncControlClient, generation: int, ok: bool, reason: str) -> None:
        body = {
            "workload": self.config.workload,
            "sidecar": self.config.sidecar_id,
            "generation": generation,
            "ok": ok,
            "reason": reason,
        }
        await client.request("POST", "/v1/sidecars/ack", body)

    async def _register(self, client: AsyncControlClient) -> None:
        if self.inbound is not None:
            body = {
                "workload": self.config.workload,
                "sidecar": self.config.sidecar_id,
                "inbound": self.inbound,
            }
            await client.request("POST", "/v1/sidecars/register", body)

    async def register(self, inbound: str | None = None, timeout: float = 5.0) -> bool:
        """Register the inbound listener at once (so peers can reach it when we say ready)."""
        if inbound is not None:
            self.inbound = inbound
        client = self._client(timeout=timeout)
        try:
            await self._register(client)
        except (ControlUnavailable, ControlRefused) as exc:
            self.last_error = str(exc)
            return False
        finally:
            await client.close()
        return True

    # -- the background tasks ----------------------------------------------------------------------
    def start(self, inbound: str | None) -> None:
        """Register ``inbound`` (HOST:PORT, or None for a client-only sidecar) and start watching
        and renewing, as tasks on the running loop."""
        loop = asyncio.get_running_loop()
        self.inbound = inbound
        self._stopping = False
        self._wake = asyncio.Event()
        self._tasks = [
            loop.create_task(self._watch_loop(), name="control-watch"),
            loop.create_task(self._renew_loop(), name="control-renew"),
        ]

    async def stop(self, unregister: bool = True) -> None:
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        known = self.inbound is not None or self.config.unregister_on_stop
        if unregister and known and self.svid is not None:
            client = self._client(timeout=2.0)
            try:
                body = {"workload": self.config.workload, "sidecar": self.config.sidecar_id}
                with contextlib.suppress(ControlUnavailable, ControlRefused):
                    await client.request("POST", "/v1/sidecars/unregister", body)
            finally:
                await client.close()
        held, self._clients = self._clients, None
        if held is not None:
            await held[1].close()

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if stopped or woken (a new trust bundle)."""
        wake = self._wake
        if wake is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), seconds)

    async def _watch_loop(self) -> None:
        delay = Backoff(base=0.1, cap=MAX_BACKOFF)
        while not self._stopping:
            client = self._client(timeout=WATCH_SECONDS + 10)
            try:
                await self._register(client)
                while not self._stopping:
                    svid = self.svid
                    held = bundle_digest(svid.bundle_pem) if svid is not None else None
                    answer = await self._watch_once(client, self.digest, WATCH_SECONDS, held)
                    delay.reset()  # the control plane answered
                    if answer is not None and "bundle" in answer[0]:
                        await self._trust_bundle(str(answer[0]["bundle"]).encode("ascii"))
                        break  # reconnect trusting it (the control plane's own SVID may be new-root)
                    if answer is not None:
                        await self._apply(answer, client, ack_later=True)
                    if self._renewed:  # reconnect with the new certificate
                        self._renewed = False
                        break
            except (ControlUnavailable, ControlRefused, ValueError, KeyError) as exc:
                self.last_error = str(exc)
                log.info("control plane watch: %s", exc)
                await asyncio.sleep(delay.next())
            finally:
                await client.close()

    async def _trust_bundle(self, bundle_pem: bytes) -> None:
        """A new trust bundle from the control plane: trust it now, and renew under the new CA."""
        svid = self.svid
        if svid is None or svid.bundle_pem == bundle_pem:
            return
        updated = Svid(svid.key_pem, svid.chain_pem, bundle_pem)
        try:
            self.target.set_identity(updated.chain_pem, updated.key_pem, bundle_pem)
        except Exception as exc:  # unusable bundle: keep the old one, say why, retry later
            self.last_error = f"trust bundle from the control plane refused: {exc}"
            log.warning("%s", self.last_error)
            await asyncio.sleep(MAX_BACKOFF)
            return
        await self._offload(self._store_svid, updated)
        self.svid = updated
        log.info("trust bundle updated by the control plane; renewing the SVID under the current CA")
        self._renew_now = True
        if self._wake is not None:
            self._wake.set()

    async def _renew_loop(self) -> None:
        delay = Backoff(base=0.5, cap=30.0)
        while not self._stopping:
            svid = self.svid
            assert svid is not None
            wait = (svid.renew_at() - dt.datetime.now(dt.UTC)).total_seconds()
            if wait > 0 and not self._renew_now:
                await self._pause(min(wait, 3600.0))  # half-life, a new bundle, or stop
            if self._stopping:
                return
            if self._wake is not None:
                self._wake.clear()
            forced = self._renew_now
            if not forced and dt.datetime.now(dt.UTC) < svid.renew_at():
                continue
            self._renew_now = False
            try:
                fresh = await self._request_svid(token=None)
            except (ControlUnavailable, ControlRefused) as exc:
                self.last_error = f"renewal: {exc}"
                log.warning("SVID renewal failed (expires %s): %s", svid.not_after, exc)
                await self._pause(delay.next())
                if forced:
                    self._renew_now = True  # still owed: the CA changed
                continue
            delay.reset()
            await self._offload(self._store_svid, fresh)
            self.svid = fresh
            self.target.set_identity(fresh.chain_pem, fresh.key_pem, fresh.bundle_pem)
            self._renewed = True

    # -- requests for the sidecar's other parts (audit shipper, egress credentials, detection) -----
    async def post_audit(self, batch: bytes) -> tuple[int, bytes]:
        """The audit shipper's :data:`~meshward.audit.shipper.AuditPost`: one NDJSON batch over the
        agent's kept-alive client (our current SVID), by the one posting path
        (:meth:`AsyncControlClient.post_audit`)."""
        return await self._shared_client().post_audit(batch)

    async def fetch_secret_async(self, name: str) -> str:
        """An egress credential this workload is entitled to (raises ControlRefused if not)."""
        query = urllib.parse.urlencode({"workload": self.config.workload, "name": name})
        _, body = await self._shared_client().request("GET", f"/v1/secrets/value?{query}", timeout=10.0)
        value = body.get("value")
        if not isinstance(value, str):
            raise ControlRefused(502, "control plane answered without a value")
        return value

    async def post_json_async(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """POST ``body`` to ``path`` over our SVID; (status, answer). Raises if unreachable."""
        try:
            return await self._shared_client().request("POST", path, body, timeout=10.0)
        except ControlRefused as exc:
            return exc.status, exc.body

    def status(self) -> dict[str, Any]:
        svid = self.svid
        return {
            "identity": self.config.identity.uri,
            "generation": self.generation,
            "cert_not_after": svid.not_after.strftime("%Y-%m-%dT%H:%M:%SZ") if svid else None,
            "last_error": self.last_error,
            "at": time.time(),
        }
