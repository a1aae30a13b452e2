"""The guided demo (``meshward demo``): a mesh of real models and callers, and a scripted scenario.

- :mod:`meshward.demo.run`      brings the demo mesh up, runs the scenario, prints the table,
  keeps the mesh up (or stops it with ``--once``).
- :mod:`meshward.demo.scenario` the steps, in order, each saying what it expects and observes.
- :mod:`meshward.demo.report`   the result of a step and the table that shows them (pure).
- :mod:`meshward.demo.probes`   checks from outside the mesh: raw TCP and ``openssl s_client``.
- :mod:`meshward.demo.impostor` a server with a valid certificate for the wrong identity, and a
  caller sidecar pointed at it.
- :mod:`meshward.demo.cluster`  the ``meshward`` CLI as a user types it (``up``, ``run --as``,
  ``apply``, ``audit``, ...), every command logged.

The mesh itself is ``examples/demo/mesh.yaml``; the models and clients live in ``examples/``.
"""
