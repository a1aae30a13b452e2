"""The control plane: the identity authority over HTTPS, the config API, distribution, audit sink.

- :mod:`meshward.control.service`     the decisions (:class:`~meshward.control.service.ControlService`).
- :mod:`meshward.control.server`      their HTTPS transport (:class:`~meshward.control.server.ControlPlane`).
- :mod:`meshward.control.client`      the mTLS client, used by the CLI.
- :mod:`meshward.control.asyncclient` the same on asyncio streams, used by the sidecar's agent.
- :mod:`meshward.control.operations`  apply / get / history / rollback, online or on the store.
- :mod:`meshward.control.endpoints`   registered sidecar endpoints: listed (valid or not), removed.
- :mod:`meshward.control.limits`      bounds: body sizes, refusal rates, slow clients, per-workload caps.

TLS (contexts, the peer check, the control plane's SPIFFE ID) is :mod:`meshward.tls`'s.
"""
