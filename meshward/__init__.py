"""Meshward: a zero-trust service mesh for AI model services.

Read this first. The code is one package per concern, stacked in layers: a package imports only
packages in the layers **below** it (and packages on the same line do not import each other).
``make test`` enforces it: ``lint-imports`` checks every import statement against the contract in
``pyproject.toml`` (``[tool.importlinter]``, the one place the layers are written), and
``tests/test_layers.py`` imports each package alone and checks what it pulled in.

Top (the command line) to bottom (leaves)::

    cli                                   the ``meshward`` command: argument parsing and output only
    demo | dashboard | review             operator programs built on the mesh (demo, web UI, reviews)
    mesh                                  the local mesh runner: up/down/status/run, check, daemonizing
    proxy                                 the sidecar process: data plane, control agent, telemetry pipeline
    control                               the control plane (CA, config API, watch, audit) and its client
    detection | rollout | egress | gateway  features: their engines and their filters
    telemetry                             metrics, access log, tracing, live tap; the telemetry filter
    audit                                 the tamper-evident audit trail, its spool and SIEM exports
    filters                               the filter contract (``filters.base``) and the policy filters
    ratelimit | analysis | metering       rate limits and token budgets; static analysis; usage
    authz                                 the pure authorization engine
    config                                the config store (generations) and the per-sidecar snapshot
    resources                             the declarative resource kinds (pydantic) and the YAML loader
    dlp | tls                             DLP detectors and scanner; TLS contexts and SPIFFE peer checks
    identity | http | ai | authn | isolation | patterns | retry | native
                                          leaves: SPIFFE IDs and the CA; sans-IO HTTP/1.1; AI protocol
                                          classification; JWT/API keys; network namespaces; Istio
                                          string matching and time windows; back-off; compiled or pure

Where a request goes (see ``../shared/DESIGN.md``): ``proxy`` accepts it and parses it with
``http``, prepares it (``proxy.prepare.prepare_request``, shared with ``meshward check``), runs the
filter chain (``filters`` + the features' filters, each pure policy from ``authz``, ``ratelimit``,
``dlp``), forwards it and records it (``telemetry``, ``audit``). ``control`` compiles resources
(``resources`` -> ``config``) into per-sidecar snapshots that the sidecar's control agent watches.

The hot path (``[tool.meshward.mypyc]`` in ``pyproject.toml``) is compiled with mypyc at install;
``MESHWARD_PURE=1`` runs the same modules from their sources (``meshward.native``, docs/compiled.md).
"""

__version__ = "0.1.0"

# Before any submodule is imported: run the mypyc-compiled hot modules, or their sources when
# MESHWARD_PURE=1 (or a compiled source changed since the build). See meshward.native.
from meshward import native as _native

_native.install()
