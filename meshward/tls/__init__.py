"""TLS for the mesh: hardened mTLS contexts, SPIFFE peer identities, reloadable own identity."""

from meshward.tls.contexts import TLS12_CIPHERS, client_context, server_context
from meshward.tls.identity import IdentityError, ReloadableIdentity, SvidInfo
from meshward.tls.peer import PeerIdentity, PeerIdentityError, peer_identity

__all__ = [
    "TLS12_CIPHERS",
    "IdentityError",
    "PeerIdentity",
    "PeerIdentityError",
    "ReloadableIdentity",
    "SvidInfo",
    "client_context",
    "peer_identity",
    "server_context",
]
