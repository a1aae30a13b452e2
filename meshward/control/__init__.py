"""The control plane: the identity authority over HTTPS, the config API, distribution, audit sink.

- :mod:`meshward.control.server`  the HTTPS server (:class:`~meshward.control.server.ControlPlane`).
- :mod:`meshward.control.client`  its mTLS client, used by the CLI and by sidecars.
- :mod:`meshward.control.tls`     TLS contexts and SPIFFE peer identities for both sides.
"""
