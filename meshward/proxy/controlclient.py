"""The sidecar's side of the control plane: identity, config watch, ACK/NACK, cache, renewal.

:class:`ControlAgent` keeps one sidecar supplied, in two background threads:

- **identity**: a key made here (it never leaves this process; cached 0600 with the chain in
  ``<dir>/svid.pem``) and a CSR; the first SVID is bought with a join token, later ones are
  renewed over mTLS with the current SVID at half-life. A cached SVID that is still valid is
  used as is, so a restarted sidecar needs neither a token nor the control plane.
- **config**: a long-poll watch carrying the digest of the last snapshot received; each new
  snapshot is handed to the sidecar, which compiles and swaps it in (ACK, and the snapshot is
  cached in ``<dir>/snapshot.json``) or raises (NACK with the reason; the old config stays).
  Reconnects use exponential backoff with full jitter; the sidecar keeps serving its last good
  config meanwhile, until its certificate expires.
- **trust bundle**: the watch also carries the digest of the bundle the sidecar holds; after a CA
  rotation the control plane pushes the new bundle, which the sidecar trusts at once (peers with
  new-root SVIDs verify from the next connection on), and the SVID is renewed right away under
  the new CA, well before the old root leaves the bundle.

The agent also registers the sidecar's inbound listener, which puts it in every other sidecar's
services table, and unregisters it when stopped. :mod:`meshward.mesh.sidecar` is the process
that runs a ``Sidecar`` fed by this agent (what ``meshward up`` and ``meshward run`` start).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import random
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509

from meshward.audit.shipper import AuditPost
from meshward.config.snapshot import MeshSnapshot
from meshward.control.client import ControlClient, ControlRefused, ControlUnavailable, audit_poster
from meshward.identity.keys import generate_key, key_pem, make_csr, write_private, write_public
from meshward.identity.spiffe import SpiffeId
from meshward.tls.control import bundle_digest

__all__ = [
    "AgentConfig",
    "ControlAgent",
    "IdentityError",
    "SidecarTarget",
    "Svid",
    "backoff_delays",
]

log = logging.getLogger(__name__)

WATCH_SECONDS = 25.0
MAX_BACKOFF = 5.0


class IdentityError(Exception):
    """No usable SVID: none cached and the join token was refused or the control plane is away."""


class SidecarTarget(Protocol):
    """What the agent feeds: the data plane's ``Sidecar`` (or anything that compiles snapshots)."""

    def set_identity(self, chain_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> None: ...
    def set_snapshot(self, snapshot: MeshSnapshot) -> None: ...


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
        return leaf.not_valid_before_utc + (leaf.not_valid_after_utc - leaf.not_valid_before_utc) / 2

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


def backoff_delays(base: float = 0.1, cap: float = MAX_BACKOFF) -> Callable[[], float]:
    """Exponential backoff with full jitter: each call gives the next delay; reset by re-creating."""
    attempt = 0

    def next_delay() -> float:
        nonlocal attempt
        attempt += 1
        return random.uniform(0, min(cap, base * 2**attempt))

    return next_delay


class ControlAgent:
    """Feeds one sidecar from the control plane; see the module docstring."""

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
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._renewed = threading.Event()  # set by the renew loop: the watch reconnects with the new SVID
        self._renew_now = threading.Event()  # a new trust bundle (or stop): renew without waiting
        self._svid_lock = threading.Lock()  # the watch (new bundle) and the renew loop both replace svid
        self._post_client: tuple[Svid | None, ControlClient] | None = None  # see post_json

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
            snapshot = MeshSnapshot.from_json(doc["snapshot"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        self.digest = str(doc.get("digest", ""))
        return snapshot

    # -- talking to the control plane ----------------------------------------------------------------
    def _client(self, timeout: float = 10.0, anonymous: bool = False) -> ControlClient:
        td = self.config.identity.trust_domain
        if anonymous or self.svid is None:
            return ControlClient(
                self.config.control_url, td, self.config.bootstrap_bundle_pem, timeout=timeout
            )
        return ControlClient(
            self.config.control_url,
            td,
            self._control_trust(),
            self.svid_path,
            self.svid_path,
            timeout=timeout,
        )

    def _control_trust(self) -> bytes:
        """Roots that verify the control plane: our SVID's bundle and the one we were started with.

        After a root rotation made while this sidecar was away (its cached bundle has only the old
        root), the bundle it was restarted with is the one that verifies the control plane's
        new-root certificate; the control plane then pushes the current bundle down the watch.
        """
        assert self.svid is not None
        held, boot = self.svid.bundle_pem, self.config.bootstrap_bundle_pem
        return held if boot.strip() in held else held.rstrip(b"\n") + b"\n" + boot

    def _request_svid(self, token: str | None) -> Svid:
        key = generate_key()
        csr = make_csr(key, self.config.identity).decode("ascii")
        if token is not None:
            with self._client(anonymous=True) as client:
                _, body = client.request("POST", "/v1/identity/sign", {"csr": csr, "token": token})
        else:
            with self._client() as client:
                _, body = client.request("POST", "/v1/identity/renew", {"csr": csr})
        return Svid(key_pem(key), body["chain"].encode("ascii"), body["bundle"].encode("ascii"))

    def obtain_identity(self, join_timeout: float = 20.0) -> Svid:
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
            delay = backoff_delays(base=0.05, cap=1.0)
            while True:
                try:
                    svid = self._request_svid(self.config.token)
                    break
                except ControlRefused as exc:
                    raise IdentityError(f"the control plane refused the join token: {exc}") from None
                except ControlUnavailable as exc:
                    if time.monotonic() >= deadline:
                        raise IdentityError(str(exc)) from None
                    time.sleep(delay())
            self._store_svid(svid)
        self.svid = svid
        self.target.set_identity(svid.chain_pem, svid.key_pem, svid.bundle_pem)
        return svid

    def initial_snapshot(self, timeout: float = 5.0) -> MeshSnapshot:
        """The current config from the control plane, else the cached last good one."""
        try:
            with self._client(timeout=timeout + 5) as client:
                body = self._watch_once(client, "", timeout)
                if body is not None:
                    snapshot = MeshSnapshot.from_json(body["snapshot"])
                    if self._apply(snapshot, str(body["digest"]), client, body["snapshot"]):
                        return snapshot
        except (ControlUnavailable, ControlRefused) as exc:
            self.last_error = str(exc)
        cached = self.cached_snapshot()
        if cached is None:
            raise IdentityError(
                f"no config: control plane unreachable ({self.last_error}) and nothing cached"
            )
        self.target.set_snapshot(cached)
        self.generation = cached.generation
        return cached

    def _watch_once(
        self, client: ControlClient, have: str, timeout: float, bundle: str | None = None
    ) -> dict[str, Any] | None:
        params: dict[str, Any] = {"workload": self.config.workload, "have": have, "timeout": timeout}
        if bundle is not None:
            params["bundle"] = bundle
        query = urllib.parse.urlencode(params)
        status, body = client.request("GET", f"/v1/watch?{query}", timeout=timeout + 10)
        return body if status == 200 and body else None

    def _apply(
        self,
        snapshot: MeshSnapshot,
        digest: str,
        client: ControlClient | None,
        doc: dict[str, Any] | None = None,
    ) -> bool:
        """Hand a snapshot to the sidecar; ACK (and cache) or NACK (keep the old one)."""
        self.digest = digest
        try:
            self.target.set_snapshot(snapshot)
        except Exception as exc:  # the sidecar could not compile it: its reason goes to the operator
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("generation %d rejected: %s", snapshot.generation, reason)
            if client is not None:
                self._ack(client, snapshot.generation, False, reason)
            return False
        self.generation = snapshot.generation
        cached = {"digest": digest, "snapshot": doc if doc is not None else snapshot.to_json()}
        write_public(self.snapshot_path, json.dumps(cached).encode())
        if client is not None:
            self._ack(client, snapshot.generation, True, "")
        return True

    def _ack(self, client: ControlClient, generation: int, ok: bool, reason: str) -> None:
        body = {
            "workload": self.config.workload,
            "sidecar": self.config.sidecar_id,
            "generation": generation,
            "ok": ok,
            "reason": reason,
        }
        client.request("POST", "/v1/sidecars/ack", body)

    def _register(self, client: ControlClient) -> None:
        if self.inbound is not None:
            body = {
                "workload": self.config.workload,
                "sidecar": self.config.sidecar_id,
                "inbound": self.inbound,
            }
            client.request("POST", "/v1/sidecars/register", body)

    def register_now(self, timeout: float = 5.0) -> bool:
        """Register the inbound listener at once (so peers can reach it when we say ready)."""
        try:
            with self._client(timeout=timeout) as client:
                self._register(client)
        except (ControlUnavailable, ControlRefused) as exc:
            self.last_error = str(exc)
            return False
        return True

    # -- the background loops ----------------------------------------------------------------------
    def start(self, inbound: str | None) -> None:
        """Register ``inbound`` (HOST:PORT, or None for a client-only sidecar) and start watching."""
        self.inbound = inbound
        for name, target in (("watch", self._watch_loop), ("renew", self._renew_loop)):
            t = threading.Thread(target=target, name=f"control-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, unregister: bool = True) -> None:
        self._stop.set()
        self._renew_now.set()
        if unregister and self.inbound is not None and self.svid is not None:
            with contextlib.suppress(ControlUnavailable, ControlRefused), self._client(timeout=2.0) as client:
                body = {"workload": self.config.workload, "sidecar": self.config.sidecar_id}
                client.request("POST", "/v1/sidecars/unregister", body)

    def _watch_loop(self) -> None:
        delay = backoff_delays()
        while not self._stop.is_set():
            client = self._client(timeout=WATCH_SECONDS + 10)
            try:
                self._register(client)
                while not self._stop.is_set():
                    svid = self.svid
                    held = bundle_digest(svid.bundle_pem) if svid is not None else None
                    body = self._watch_once(client, self.digest, WATCH_SECONDS, held)
                    delay = backoff_delays()  # the control plane answered: reset the backoff
                    if body is not None and "bundle" in body:
                        self._trust_bundle(str(body["bundle"]).encode("ascii"))
                        break  # reconnect trusting it (the control plane's own SVID may be new-root)
                    if body is not None:
                        snapshot = MeshSnapshot.from_json(body["snapshot"])
                        self._apply(snapshot, str(body["digest"]), client, body["snapshot"])
                    if self._renewed.is_set():  # reconnect with the new certificate
                        self._renewed.clear()
                        break
            except (ControlUnavailable, ControlRefused, ValueError, KeyError) as exc:
                self.last_error = str(exc)
                log.info("control plane watch: %s", exc)
                self._stop.wait(delay())
            finally:
                client.close()

    def _trust_bundle(self, bundle_pem: bytes) -> None:
        """A new trust bundle from the control plane: trust it now, and renew under the new CA."""
        with self._svid_lock:
            svid = self.svid
            if svid is None or svid.bundle_pem == bundle_pem:
                return
            updated = Svid(svid.key_pem, svid.chain_pem, bundle_pem)
            try:
                self.target.set_identity(updated.chain_pem, updated.key_pem, bundle_pem)
            except Exception as exc:  # unusable bundle: keep the old one, say why, retry later
                self.last_error = f"trust bundle from the control plane refused: {exc}"
                log.warning("%s", self.last_error)
                self._stop.wait(MAX_BACKOFF)
                return
            self._store_svid(updated)
            self.svid = updated
        log.info("trust bundle updated by the control plane; renewing the SVID under the current CA")
        self._renew_now.set()

    def _renew_loop(self) -> None:
        delay = backoff_delays(base=0.5, cap=30.0)
        while not self._stop.is_set():
            svid = self.svid
            assert svid is not None
            wait = (svid.renew_at() - dt.datetime.now(dt.UTC)).total_seconds()
            if wait > 0:
                self._renew_now.wait(min(wait, 3600.0))  # half-life, a new bundle, or stop
            if self._stop.is_set():
                return
            forced = self._renew_now.is_set()
            if not forced and dt.datetime.now(dt.UTC) < svid.renew_at():
                continue
            self._renew_now.clear()
            try:
                fresh = self._request_svid(token=None)
            except (ControlUnavailable, ControlRefused) as exc:
                self.last_error = f"renewal: {exc}"
                log.warning("SVID renewal failed (expires %s): %s", svid.not_after, exc)
                self._stop.wait(delay())
                if forced:
                    self._renew_now.set()  # still owed: the CA changed
                continue
            delay = backoff_delays(base=0.5, cap=30.0)
            with self._svid_lock:
                self._store_svid(fresh)
                self.svid = fresh
                self.target.set_identity(fresh.chain_pem, fresh.key_pem, fresh.bundle_pem)
            self._renewed.set()

    def audit_poster(self) -> AuditPost:
        """The audit shipper's poster: each batch over our current SVID (a fresh connection)."""
        return audit_poster(lambda: self._client(timeout=30.0))

    def fetch_secret(self, name: str) -> str:
        """An egress credential this workload is entitled to (raises ControlRefused if not)."""
        query = urllib.parse.urlencode({"workload": self.config.workload, "name": name})
        with self._client(timeout=10.0) as client:
            _, body = client.request("GET", f"/v1/secrets/value?{query}")
        value = body.get("value")
        if not isinstance(value, str):
            raise ControlRefused(502, "control plane answered without a value")
        return value

    async def fetch_secret_async(self, name: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(None, self.fetch_secret, name)

    def post_json(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """POST ``body`` to ``path`` over our SVID; (status, answer). Raises if unreachable.

        One caller at a time (the detection reporter): the connection is kept alive between
        calls and replaced when the SVID is.
        """
        held = self._post_client
        if held is None or held[0] is not self.svid:
            if held is not None:
                held[1].close()
            held = self._post_client = (self.svid, self._client(timeout=10.0))
        try:
            return held[1].request("POST", path, body)
        except ControlRefused as exc:
            return exc.status, exc.body

    async def post_json_async(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        return await asyncio.get_running_loop().run_in_executor(None, self.post_json, path, body)

    def status(self) -> dict[str, Any]:
        svid = self.svid
        return {
            "identity": self.config.identity.uri,
            "generation": self.generation,
            "cert_not_after": svid.not_after.strftime("%Y-%m-%dT%H:%M:%SZ") if svid else None,
            "last_error": self.last_error,
            "at": time.time(),
        }
