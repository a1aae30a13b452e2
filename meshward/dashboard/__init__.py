"""The dashboard: a loopback web UI over the running mesh, and the live tap behind it.

- :mod:`~meshward.dashboard.tap`     reading every sidecar's tap: filters, relay, one-line format.
- :mod:`~meshward.dashboard.traffic` observed edges from the sidecars' Prometheus metrics.
- :mod:`~meshward.dashboard.auth`    one-time login tokens, sessions, CSRF tokens.
- :mod:`~meshward.dashboard.view`    what the pages read: workloads, sidecars, config, access.
- :mod:`~meshward.dashboard.pages`   the page registry and one module per page.
- :mod:`~meshward.dashboard.server`  the HTTP server (127.0.0.1 only) and its security headers.
- :mod:`~meshward.dashboard.launch`  ``meshward dashboard``: find or start it, mint a login URL.

The sidecar's side of the tap (request metadata to whoever watches ``/tap``) is
:mod:`meshward.telemetry.taphub`: the dashboard sits above the sidecar and reads it over HTTP.
This package's ``__init__`` imports nothing.
"""
