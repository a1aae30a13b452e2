"""Model versions: several endpoints per service, ``ModelRoute`` routing and canary rollouts.

Data plane (pure decisions; the outbound proxy's glue that uses them lives in
:mod:`meshward.proxy.forward` and :mod:`meshward.proxy.mirror`):

- :mod:`.balancer`  least request over healthy endpoints, outlier ejection with back-off.
- :mod:`.selection` a compiled ``ModelRoute``: rules, weights, sticky buckets, mirror sampling.
- :mod:`.rewrite`   model aliasing in the OIP path or the OpenAI body.
- :mod:`.compare`   does a shadow answer differ from the real one.
- :mod:`.window`    per-subset outcomes of a window, as an audit event for the control plane.
- :mod:`.plan`      per service and generation: endpoints by subset + cross-generation state.

Control plane (automated canary analysis):

- :mod:`.checks`     metric name → function(window) → value (a registry other packages extend).
- :mod:`.analysis`   pure rollout state machine: steps, interval, threshold, promote, roll back.
- :mod:`.state`      rollout state in SQLite (survives a restart).
- :mod:`.controller` the control plane's loop: windows from the audit store, new generations.
"""
