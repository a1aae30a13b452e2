"""Meshward: a zero-trust service mesh for AI model services.

Architecture map (one package per concern, see ``../shared/DESIGN.md``):

- ``meshward.identity``  SPIFFE IDs, the certificate authority, join tokens, X.509-SVIDs.
- ``meshward.resources`` the declarative resource kinds (pydantic) and the YAML loader.
- ``meshward.config``    the config store (SQLite generations) and the per-sidecar snapshot.
- ``meshward.http``      sans-IO HTTP/1.1 parsing, strict validation, path normalization and header hygiene.
- ``meshward.tls``       the one TLS context builder and SPIFFE peer check (sidecars, control plane).
- ``meshward.proxy``     the sidecar: inbound and outbound listeners, connection pool, admin.
- ``meshward.filters``   the filter chain contract and one filter per concern.
- ``meshward.ai``        AI protocol classification (OpenAI, OIP v2, TF Serving) and token usage.
- ``meshward.authz``     pure authorization policy engine.
- ``meshward.ratelimit`` token buckets, concurrency and LLM token budgets (local and Redis).
- ``meshward.dlp``       data-loss prevention detectors, body decoding (as the app reads it) and rewriting.
- ``meshward.telemetry`` metrics, access log and tracing.
- ``meshward.audit``     the tamper-evident audit trail, its spool and its SIEM exports.
- ``meshward.egress``    external services, egress policy, TLS origination, injected credentials.
- ``meshward.detection`` threat detection: sidecar aggregates, PRADA, detectors, alerts, quarantine.
- ``meshward.control``   the control plane: CA over HTTPS, config API, watch, audit sink.
- ``meshward.mesh``      the local mesh runner (``meshward up``/``down``/``status``/``run``).
- ``meshward.cli``       the ``meshward`` command.
"""

__version__ = "0.1.0"

# Before any submodule is imported: run the mypyc-compiled hot modules, or their sources when
# MESHWARD_PURE=1 (or a compiled source changed since the build). See meshward.native.
from meshward import native as _native

_native.install()
