"""Pure authorization: AuthorizationPolicy resources in, allow/deny decisions out, no I/O.

- ``attributes``  :class:`RequestAttributes` (what a decision reads) and :class:`AuthzDecision`.
- ``compiler``    one policy rule → one precompiled predicate.
- ``engine``      policy selection for a workload and :class:`AuthzEngine.evaluate`.
- ``aliases``     trust-domain aliases applied to a policy's principals.
- ``trace``       per-rule traces (which field failed), for ``meshward check``.

Value patterns (string forms, URI templates, IP blocks, principals, time windows) live in
:mod:`meshward.patterns`, shared with rate limits and the resource model's validation.
"""
