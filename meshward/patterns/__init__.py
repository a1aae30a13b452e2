"""Value patterns of policies: Istio's string forms, URI templates, IP blocks, principals, time
windows. A leaf: it imports nothing from Meshward, so the resource model validates with the same
code that policy engines match with.

- ``strings``     exact ``abc`` / prefix ``abc*`` / suffix ``*abc`` / presence ``*``: one
                  :class:`StringMatcher` for authorization, rate limits and validation.
- ``paths``       URI templates ``{*}`` / ``{**}`` on top of the string forms.
- ``ipblocks``    addresses and CIDR blocks as integer ranges (IPv4 and IPv6 in one space).
- ``principals``  principal patterns rewritten to Istio's ``<td>/ns/<ns>/sa/<sa>`` form.
- ``timewindow``  ``request.time`` windows such as ``Mon-Fri 01:00-05:00 UTC``.
"""
