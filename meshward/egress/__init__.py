"""Egress control: what leaves the mesh, to which external host, from which workload, how.

- ``engine``      pure: the external services table and the EgressPolicy decisions of one
                  calling workload (host, method, path, model, AI operation; CONNECT at the
                  host/port level), compiled with :mod:`meshward.authz`'s matchers.
- ``secrets``     the control plane's secret store (``<state>/secrets``, 0600) and who may
                  receive a secret (only sidecars of workloads allowed to reach its service).
- ``credentials`` the sidecar's in-memory cache of the secrets it injects (refreshed, never
                  written to disk, never in a config dump).
- ``tls``         TLS origination contexts (caBundle or the system store, host-name checked).
- ``filters``     the egress-only filters: authorization and credential injection.
- ``chain``       the outbound filter chain for external destinations, reusing the filters of
                  :mod:`meshward.filters` through the filter contract.
- ``check``       ``meshward check --to <external host>``.

The sidecar's outbound side hands every request whose host is not a mesh service to
:mod:`meshward.proxy.egress`.
"""
