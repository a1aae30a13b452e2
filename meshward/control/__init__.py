"""The control plane: the identity authority over HTTPS, the config API, distribution, audit sink.

- :mod:`meshward.control.service`     the decisions (:class:`~meshward.control.service.ControlService`).
- :mod:`meshward.control.server`      their HTTPS transport (:class:`~meshward.control.server.ControlPlane`).
- :mod:`meshward.control.client`      the mTLS client, used by the CLI and by sidecars.
- :mod:`meshward.control.operations`  apply / get / history / rollback, online or on the store.
"""
