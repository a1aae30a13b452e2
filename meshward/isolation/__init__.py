"""Workload isolation for local meshes (``Mesh.spec.isolation: netns``), Istio's pod model on one
machine: no way around the sidecar.

- :mod:`meshward.isolation.plan`     pure: names, addresses, users, hosts files and iptables rules.
- :mod:`meshward.isolation.network`  applies a plan with ``ip`` and ``iptables`` (root), tears it
  down, and opens sockets inside a namespace (readiness probes).

Each isolated workload gets a network namespace with a veth pair on a bridge of the mesh's own
(a /24 in 10.0.0.0/8 that is never routed out: no default route, no NAT), a hosts file that
names the mesh services, an unprivileged user of its own for the app (so it cannot read the
state directory: the CA, other workloads' keys), and iptables rules with istio-iptables
semantics: the app's outbound TCP goes to its sidecar's outbound listener (the original
destination stays readable with ``SO_ORIGINAL_DST``), inbound TCP to the app's port goes to the
sidecar's inbound (mTLS) listener, the sidecar's own traffic (root) is not redirected.
"""
