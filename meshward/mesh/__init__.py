"""The local mesh runner: ``meshward up`` / ``down`` / ``status`` / ``run`` / ``check``.

- :mod:`meshward.mesh.daemon`     runs a mesh in the foreground or detached (``meshward up``).
- :mod:`meshward.mesh.supervisor` starts the control plane and every workload, keeps them running.
- :mod:`meshward.mesh.workload`   one workload: its sidecar (``meshward proxy --control``), then its
  app, restarted on exit.
- :mod:`meshward.mesh.oneoff`     one command behind a temporary sidecar (``meshward run``).
- :mod:`meshward.mesh.status`     the status document (DESIGN.md §5).
- :mod:`meshward.mesh.records`    ``<state>/mesh/run.json``, what a running mesh records.
- :mod:`meshward.mesh.processes`  child processes in their own groups, stopped as a whole.
- :mod:`meshward.mesh.polling`    the one bounded wait (``wait_until``); ``errors``: MeshError.
- :mod:`meshward.mesh.check`      would a call be allowed? (``meshward check``, the access matrix).
"""
