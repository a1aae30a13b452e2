"""The sidecar: the product's hot path. Every call to a model passes through two of them.

Map of the package (request path top to bottom)::

    listener.py    accept loop: plain, STRICT mTLS, PERMISSIVE (first-byte sniff); SO_REUSEPORT
    downstream.py  asyncio adapter of a client connection: peer SVID check, callbacks to the session
    session.py     a client connection's HTTP: parser per connection, pipelining, backpressure
    states.py      the exchange's states, their transition tables, the ports it acts through
    machine.py     sans-IO exchange: request/response events in, writes/pauses/closes out
    exchange.py    the request side's coroutine: run the handler, read_body(), forward()
    eager.py       run a request's coroutine without a Task until it first waits
    prepare.py     prepare_request(): head → RequestContext (shared with `meshward check`)
    inbound.py     enforcement side: prepare_request → body if asked → filters → app
    outbound.py    the app's HTTP proxy: resolve a mesh service → mTLS + SPIFFE check
    forward.py     outbound to a service plan: subset, endpoint, retries, mirror, outcomes
    mirror.py      a shadow request's own mTLS exchange
    egress.py      external services, REGISTRY_ONLY, CONNECT tunnels
    forwarded.py   the forwarded head's fields, built the same way on every side
    chain.py       build_chain(): the filters, in order, one comment per layer
    hooks.py       a filter chain compiled per hook (only the filters that implement it)
    compiled.py    one generation compiled for the hot path (chain hooks, routes, mTLS mode)
    routes.py      service names → serving sidecars
    upstream.py    asyncio adapter of upstream connections; the keep-alive pool
    responses.py   every local answer (denials by kind, failures by name) mapped in one place
    admin.py       /ready, /stats/prometheus, /config_dump, /tap
    sidecar.py     Sidecar: set_identity / compile + apply (= set_snapshot) / start / stop / ship_audit
    watch.py       Watch[T]: the generation in force (Sidecar.configs), swapped on the loop
    pipeline.py    the process's telemetry pipeline: audit spool + shipper, access log, exporter

The sidecar process (``meshward proxy``)::

    runner.py        the one process main: --bootstrap FILE | --control URL, 1..N workers
    bootstrap.py     the static bootstrap file
    controlclient.py the control agent: asyncio tasks on the sidecar's loop (identity, watch,
                     compile in an executor, ACK/NACK, renewal)

The HTTP parsing is sans-IO (:mod:`meshward.http`), the TLS pieces in :mod:`meshward.tls`.
"""

from meshward.proxy.compiled import SnapshotRejected
from meshward.proxy.options import SidecarOptions
from meshward.proxy.sidecar import Sidecar

__all__ = ["Sidecar", "SidecarOptions", "SnapshotRejected"]
