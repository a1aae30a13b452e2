"""TLS for the mesh: the one context builder, SPIFFE peer identities, reloadable own identity.

Sidecars and the control plane (both sides) build their contexts with
:mod:`meshward.tls.contexts` and check peers with :mod:`meshward.tls.peer`;
:mod:`meshward.tls.control` names the control plane's identity.
"""

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
