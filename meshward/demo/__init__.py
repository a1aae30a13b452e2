"""The guided demo (``meshward demo``): a mesh of real models and callers, and a scripted scenario.

- :mod:`meshward.demo.report`   the result of a step and the table that shows them (pure).
- :mod:`meshward.demo.probes`   checks from outside the mesh: raw TCP, ``openssl s_client``, a
  forged server holding a valid certificate for the wrong identity.
- :mod:`meshward.demo.cluster`  brings the demo mesh up and down through the ``meshward`` CLI,
  and runs callers with ``meshward run --as``.
- :mod:`meshward.demo.scenario` the steps, in order, each saying what it expects and observes.

The mesh itself is ``examples/demo/mesh.yaml``; the models and clients live in ``examples/``.
"""
