"""The peer's SPIFFE identity after a verified handshake, and the certificate hash for XFCC.

OpenSSL has already verified the chain against the trust bundle; what is left is the SPIFFE
part: exactly one URI SAN, a well-formed ``spiffe://`` ID, in our trust domain.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass

from meshward.identity.spiffe import InvalidSpiffeId, SpiffeId

__all__ = ["PeerIdentity", "PeerIdentityError", "peer_identity"]


class PeerIdentityError(Exception):
    """The peer's certificate chains to our bundle but is not an acceptable X.509-SVID."""


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    spiffe_id: SpiffeId
    cert_sha256: str  # hex SHA-256 of the leaf certificate (DER), as in Envoy's XFCC Hash=

    @property
    def uri(self) -> str:
        return self.spiffe_id.uri


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket, trust_domain: str) -> PeerIdentity:
    """Extract and check the peer's SPIFFE ID; raise :class:`PeerIdentityError` if unacceptable."""
    cert = ssl_object.getpeercert()
    der = ssl_object.getpeercert(binary_form=True)
    if not cert or not der:
        raise PeerIdentityError("peer presented no verified certificate")
    sans: tuple[tuple[str, str], ...] = cert.get("subjectAltName", ())  # type: ignore[assignment]
    uris = [value for kind, value in sans if kind == "URI"]
    if len(uris) != 1:  # the X509-SVID spec: exactly one URI SAN (other SAN types may exist)
        raise PeerIdentityError(f"peer certificate must carry exactly one URI SAN, found {len(uris)}")
    try:
        sid = SpiffeId.from_uri(str(uris[0]))
    except InvalidSpiffeId as exc:
        raise PeerIdentityError(f"peer certificate identity: {exc}") from exc
    if sid.trust_domain != trust_domain:
        raise PeerIdentityError(f"peer trust domain {sid.trust_domain!r} is not {trust_domain!r}")
    return PeerIdentity(sid, hashlib.sha256(der).hexdigest())
