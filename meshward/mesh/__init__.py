"""The local mesh runner: ``meshward up`` / ``down`` / ``status`` / ``run``.

- :mod:`meshward.mesh.supervisor` starts and supervises control plane, sidecars and apps.
- :mod:`meshward.mesh.oneoff`     one command behind a temporary sidecar (``meshward run``).
- :mod:`meshward.mesh.status`     the status document (DESIGN.md §5).
- :mod:`meshward.mesh.records`    ``<state>/mesh/run.json``, what a running mesh records.
- :mod:`meshward.mesh.processes`  child processes in their own groups, stopped as a whole.
"""
