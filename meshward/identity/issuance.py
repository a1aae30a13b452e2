"""The identity service: who gets which X.509-SVID, and the record of every decision.

:class:`IdentityService` is what the control plane serves and what ``meshward certs`` uses:

- :meth:`~IdentityService.issue`: first SVID of a workload, by CSR + join token. The CSR is
  checked on its own terms first (signature, one SPIFFE URI SAN, no CA:TRUE, our trust domain),
  then one use of the token is consumed for exactly the CSR's identity, then it is signed.
- :meth:`~IdentityService.renew`: a workload that already holds a valid SVID (the control plane
  has verified it over mTLS) gets a new one for the same identity, without a token.
- :meth:`~IdentityService.mint`: key + SVID + bundle written to a directory, for a client outside
  the mesh (``meshward certs issue``).

Every issuance and every refusal goes to the ledger (``meshward.db``). Refusals raise
:class:`~meshward.identity.authority.CsrRefused` (or its subclass
:class:`~meshward.identity.tokens.TokenRefused`); ``reason`` is safe to send to the requester.
The service reloads the CA from disk when ``ca rotate`` changed it, and is safe to share between
threads.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from meshward.identity.authority import DEFAULT_SVID_TTL, Authority, CsrRefused, pem
from meshward.identity.keys import generate_key, key_pem, write_private, write_public
from meshward.identity.ledger import RefusalRecord, SvidLedger, SvidRecord, iso, serial_hex
from meshward.identity.rotation import next_overlap_end, refresh_bundle
from meshward.identity.spiffe import InvalidSpiffeId, SpiffeId, is_reserved, parse_identity
from meshward.identity.state import MeshState
from meshward.identity.tokens import DEFAULT_TOKEN_TTL, JoinTokens

__all__ = ["IdentityService", "IssuedSvid"]


@dataclass(frozen=True)
class IssuedSvid:
    """What a workload gets back: its chain (leaf + intermediate), the trust bundle, and facts."""

    chain_pem: bytes
    bundle_pem: bytes
    not_after: dt.datetime
    serial: str  # hex, as openssl prints it
    spiffe_id: SpiffeId


def _claimed_identity(csr_pem: bytes) -> str | None:
    """Best effort: the URI SANs a (possibly invalid) CSR asks for, for the refusal record."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return ",".join(uris)[:512] if uris else None


class IdentityService:
    """Issues, renews and records SVIDs for one mesh state directory."""

    def __init__(self, state: MeshState) -> None:
        self.state = state
        state.trust_domain  # noqa: B018 - refuse a missing mesh before creating any file
        self._lock = threading.Lock()
        self._conn = state.connect(check_same_thread=False)
        self._ledger = SvidLedger(self._conn)
        self._tokens = JoinTokens(self._conn)
        self._authority: Authority | None = None
        self._bundle = b""
        self._ca_stamp: tuple[int, ...] = ()
        self._overlap_end: dt.datetime | None = None
        self._chain_tail = b""  # PEM of the intermediate and upstream CAs, sent after every leaf
        self._watched = (str(state.intermediate_cert_path), str(state.bundle_path))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> IdentityService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the CA as it is on disk -----------------------------------------------------------------
    def _stamp(self) -> tuple[int, ...]:
        return tuple(os.stat(p).st_mtime_ns for p in self._watched)

    def authority(self) -> Authority:
        """The current issuing CA, reloaded after ``ca rotate`` or an ended root overlap."""
        if self._overlap_end is not None and dt.datetime.now(dt.UTC) >= self._overlap_end:
            refresh_bundle(self.state)
            self._ca_stamp = ()
        stamp = self._stamp()
        if self._authority is None or stamp != self._ca_stamp:
            self._authority = self.state.load_authority()
            self._chain_tail = self._authority.chain_pem_tail()
            self._bundle = self.state.bundle_pem()
            self._overlap_end = next_overlap_end(self.state)
            self._ca_stamp = stamp
        return self._authority

    def bundle_pem(self) -> bytes:
        with self._lock:
            self.authority()
            return self._bundle

    def trust_material(self) -> tuple[bytes, bytes]:
        """``(bundle PEM, issuing chain PEM)`` as on disk now; they change with ``ca rotate`` and
        when a retired root's overlap ends. Cheap when nothing changed (two ``stat`` calls)."""
        with self._lock:
            self.authority()
            return self._bundle, self._chain_tail

    def identity(self, text: str | SpiffeId) -> SpiffeId:
        """Any of the three spellings (or a SpiffeId) in this mesh's trust domain."""
        sid = text if isinstance(text, SpiffeId) else parse_identity(text, self.state.trust_domain)
        if sid.trust_domain != self.state.trust_domain:
            raise InvalidSpiffeId(f"{sid.uri} is not in trust domain {self.state.trust_domain!r}")
        return sid

    # -- decisions -------------------------------------------------------------------------------
    def create_token(
        self, identity: str | SpiffeId, ttl: dt.timedelta = DEFAULT_TOKEN_TTL, uses: int = 1
    ) -> str:
        sid = self.identity(identity)
        if is_reserved(sid):
            raise InvalidSpiffeId(f"{sid.uri} is reserved for the mesh itself: no join token for it")
        with self._lock:
            return self._tokens.create(sid, ttl, uses)

    def _refuse(self, exc: CsrRefused, claimed: str | None, via: str) -> CsrRefused:
        self._ledger.record_refusal(claimed, exc.reason, via)
        return exc

    def _sign(
        self,
        authority: Authority,
        csr: x509.CertificateSigningRequest,
        sid: SpiffeId,
        ttl: dt.timedelta | None,
        via: str,
    ) -> IssuedSvid:
        """Sign and record in the open transaction (with a spent token, if any): all or nothing."""
        pub = csr.public_key()
        assert isinstance(pub, ec.EllipticCurvePublicKey)  # check_csr made sure
        try:
            leaf = authority.issue(sid, pub, ttl or DEFAULT_SVID_TTL)
            self._ledger.record_issued(leaf, sid, via, commit=False)
            self._conn.commit()
        except BaseException:
            self._conn.rollback()
            raise
        return IssuedSvid(
            pem(leaf) + self._chain_tail,
            self._bundle,
            leaf.not_valid_after_utc,
            serial_hex(leaf.serial_number),
            sid,
        )

    def issue(self, csr_pem: bytes, token: str, ttl: dt.timedelta | None = None) -> IssuedSvid:
        """Sign a workload's first SVID if ``token`` was made for exactly the CSR's identity."""
        with self._lock:
            authority = self.authority()
            try:
                csr, sid = authority.check_csr(csr_pem)
                self._tokens.consume(token, sid, commit=False)
            except CsrRefused as exc:
                self._conn.rollback()
                raise self._refuse(exc, _claimed_identity(csr_pem), "token") from None
            return self._sign(authority, csr, sid, ttl, "token")

    def renew(
        self,
        csr_pem: bytes,
        current_peer_spiffe_id: str | SpiffeId,
        ttl: dt.timedelta | None = None,
        peer_serial: str | None = None,
    ) -> IssuedSvid:
        """Sign a new SVID for a peer that proved (over mTLS) it holds one for the same identity.

        ``peer_serial`` (hex) of the certificate the peer presented, when given, must not be revoked.
        """
        with self._lock:
            authority = self.authority()
            try:
                try:
                    peer = self.identity(current_peer_spiffe_id)
                except InvalidSpiffeId as exc:
                    raise CsrRefused(f"caller identity: {exc}") from exc
                csr, sid = authority.check_csr(csr_pem)
                if sid != peer:
                    raise CsrRefused(f"caller {peer.uri} may only renew its own identity, not {sid.uri}")
                if peer_serial is not None and self._ledger.is_revoked(peer_serial):
                    raise CsrRefused(f"caller certificate {peer_serial} is revoked")
            except CsrRefused as exc:
                raise self._refuse(exc, _claimed_identity(csr_pem), "renew") from None
            return self._sign(authority, csr, sid, ttl, "renew")

    def mint(
        self,
        identity: str | SpiffeId,
        out_dir: Path,
        ttl: dt.timedelta | None = None,
        *,
        system: bool = False,
    ) -> IssuedSvid:
        """Make a key here and write ``key.pem`` (0600), ``cert.pem`` (chain), ``bundle.pem``.

        ``system``: the mesh's own identity (the control plane's); any other use of a reserved
        ``meshward-system/*`` identity is refused."""
        sid = self.identity(identity)
        if is_reserved(sid) and not system:
            raise InvalidSpiffeId(f"{sid.uri} is reserved for the mesh itself")
        key = generate_key()
        with self._lock:
            authority = self.authority()
            leaf = authority.issue(sid, key.public_key(), ttl or DEFAULT_SVID_TTL)
            self._ledger.record_issued(leaf, sid, "mint")
            bundle = self._bundle
        out_dir.mkdir(parents=True, exist_ok=True)
        write_private(out_dir / "key.pem", key_pem(key))
        write_public(out_dir / "cert.pem", authority.chain_pem(leaf))
        write_public(out_dir / "bundle.pem", bundle)
        return IssuedSvid(
            authority.chain_pem(leaf), bundle, leaf.not_valid_after_utc, serial_hex(leaf.serial_number), sid
        )

    def revoke(self, serial: str) -> bool:
        """Mark an SVID revoked (renewals with it are refused, and so are handshakes once the
        control plane has pushed the next snapshot); False if the serial is unknown."""
        with self._lock:
            return self._ledger.revoke(serial)

    def revoke_identity(self, identity: str | SpiffeId) -> list[str]:
        """Revoke every unexpired SVID of ``identity``; the serials revoked."""
        sid = self.identity(identity)
        with self._lock:
            return self._ledger.revoke_identity(sid.uri)

    def revoked_serials(self) -> list[str]:
        """Revoked serials that have not expired (distributed in every config snapshot)."""
        with self._lock:
            return self._ledger.revoked_serials()

    # -- reading ---------------------------------------------------------------------------------
    def certificates(self, identity: str | SpiffeId | None = None) -> list[SvidRecord]:
        uri = None if identity is None else self.identity(identity).uri
        with self._lock:
            return self._ledger.certificates(uri)

    def refusals(self) -> list[RefusalRecord]:
        with self._lock:
            return self._ledger.refusals()

    def expiry_warnings(self, days: int = 30) -> list[str]:
        """One line per root or intermediate that expires within ``days`` (for ``meshward status``)."""
        with self._lock:
            authority = self.authority()
        now = dt.datetime.now(dt.UTC)
        horizon = now + dt.timedelta(days=days)
        can_rotate = self.state.root_key_path.exists()
        fix_inter = (
            "run `meshward ca rotate`"
            if can_rotate
            else "plug in a new one with `meshward ca rotate --ca-cert`"
        )
        checks = [("root CA", authority.root, "run `meshward ca rotate --root`")]
        checks.append(("intermediate CA", authority.intermediate, fix_inter))
        checks += [("upstream CA", c, "renew it with your PKI") for c in authority.upstream]
        warnings = []
        for what, cert, fix in checks:
            end = cert.not_valid_after_utc
            if end > horizon:
                continue
            name = cert.subject.rfc4514_string()
            when = iso(end)
            if end <= now:
                warnings.append(f"{what} {name} expired at {when}; {fix}")
            else:
                left = (end - now).days
                warnings.append(f"{what} {name} expires in {left} days ({when}); {fix}")
        return warnings
