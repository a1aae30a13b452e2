"""The workload's own identity, reloadable: rotation swaps contexts for NEW connections only.

:class:`ReloadableIdentity` holds the current SVID (chain + key) and trust bundle and the SSL
contexts built from them. Listeners ask for :attr:`server_context` per accepted connection
and the upstream pool for :attr:`client_context` per new connection, so a rotated
certificate is used from the next connection on while open connections keep theirs.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass

from cryptography import x509

from meshward.identity.authority import spiffe_id_of
from meshward.identity.spiffe import InvalidSpiffeId, SpiffeId
from meshward.tls.contexts import client_context, server_context

__all__ = ["IdentityError", "ReloadableIdentity", "SvidInfo"]


class IdentityError(ValueError):
    """The identity material given to the sidecar is unusable (the caller's fault)."""


@dataclass(frozen=True, slots=True)
class SvidInfo:
    spiffe_id: SpiffeId
    not_after: dt.datetime
    serial: int


class ReloadableIdentity:
    """Current SVID, bundle and the SSL contexts built from them."""

    def __init__(self) -> None:
        self._server: ssl.SSLContext | None = None
        self._client: ssl.SSLContext | None = None
        self._info: SvidInfo | None = None
        self.generation = 0
        #: Serials (lower-case hex) refused at the handshake, both ways: the snapshot's list.
        self.revoked: frozenset[str] = frozenset()

    def update(self, chain_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> SvidInfo:
        """Validate and install a new SVID; raises :class:`IdentityError` and keeps the old one."""
        try:
            leaf = x509.load_pem_x509_certificate(chain_pem)
            sid = spiffe_id_of(leaf)
            server = server_context(chain_pem, key_pem, bundle_pem)
            client = client_context(chain_pem, key_pem, bundle_pem)
        except (ValueError, ssl.SSLError, InvalidSpiffeId) as exc:
            raise IdentityError(f"unusable workload identity: {exc}") from exc
        info = SvidInfo(sid, leaf.not_valid_after_utc, leaf.serial_number)
        self._server, self._client, self._info = server, client, info
        self.generation += 1
        return info

    @property
    def loaded(self) -> bool:
        return self._info is not None

    @property
    def info(self) -> SvidInfo:
        if self._info is None:
            raise IdentityError("no workload identity loaded yet")
        return self._info

    @property
    def server_context(self) -> ssl.SSLContext:
        if self._server is None:
            raise IdentityError("no workload identity loaded yet")
        return self._server

    @property
    def client_context(self) -> ssl.SSLContext:
        if self._client is None:
            raise IdentityError("no workload identity loaded yet")
        return self._client
