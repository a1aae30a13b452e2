"""The sidecar: the product's hot path. Every call to a model passes through two of them.

Map of the package (request path top to bottom)::

    listener.py    accept loop: plain, STRICT mTLS, PERMISSIVE (first-byte sniff); SO_REUSEPORT
    downstream.py  a client connection: strict parser events, pipelining, backpressure, timeouts
    exchange.py    one request: buffer/stream the body, forward, local answers, finish()
    response.py    its response half: filter hooks, re-framing, StreamAbort, WebSocket tunnel
    eager.py       run a request's coroutine without a Task until it first waits (outbound)
    prepare.py     prepare_request(): head → RequestContext (shared with `meshward check`)
    inbound.py     enforcement side: prepare_request → body if asked → filters → app
    outbound.py    the app's HTTP proxy: resolve a mesh service → mTLS + SPIFFE check
    chain.py       build_chain(): the filters, in order, one comment per layer
    compiled.py    one generation compiled for the hot path (chain hooks, routes, mTLS mode)
    routes.py      service names → serving sidecars
    upstream.py    upstream connections and the keep-alive pool (identity checked on connect)
    responses.py   every local answer (denials, failures) mapped in one place
    admin.py       /ready, /stats/prometheus, /config_dump
    sidecar.py     Sidecar: set_identity / set_snapshot / start / stop
    bootstrap.py   the static bootstrap file; runner.py runs 1..N worker processes

The HTTP parsing is sans-IO (:mod:`meshward.http`), the TLS pieces in :mod:`meshward.tls`.
"""

from meshward.proxy.compiled import SnapshotRejected
from meshward.proxy.options import SidecarOptions
from meshward.proxy.sidecar import Sidecar

__all__ = ["Sidecar", "SidecarOptions", "SnapshotRejected"]
