"""Pure authorization: AuthorizationPolicy resources in, allow/deny decisions out, no I/O.

- ``matchers``    value patterns (exact/prefix/suffix/presence, path templates, CIDRs, principals).
- ``timewindow``  ``request.time`` windows such as ``Mon-Fri 01:00-05:00 UTC``.
- ``attributes``  :class:`RequestAttributes` (what a decision reads) and :class:`AuthzDecision`.
- ``compiler``    one policy rule → one precompiled predicate.
- ``engine``      policy selection for a workload and :class:`AuthzEngine.evaluate`.

This package's ``__init__`` imports nothing on purpose: the resource model validates values
with ``matchers`` and ``timewindow`` while ``engine`` imports the resource model.
"""
