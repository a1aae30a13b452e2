"""The ingress gateway: outside callers in, mesh services out over mTLS.

A gateway is a sidecar process in gateway mode (``meshward gateway``): its inbound listener
faces the outside (HTTPS with its own server certificate, or plain HTTP on loopback) instead of
requiring a mesh certificate, the usual chain runs on every request (end-user authentication,
authorization, limits, DLP, telemetry, audit), then :mod:`meshward.gateway.filter` picks the
route and the request leaves through the gateway's own outbound listener, which resolves the
mesh service and calls it over mTLS as the gateway's SPIFFE identity.

- :mod:`meshward.gateway.routes`  pure: the route table (first match wins).
- :mod:`meshward.gateway.filter`  the routing filter (404 for no route; Host rewritten).
- :mod:`meshward.gateway.tls`     the outside-facing server TLS context.
"""
