"""Principal patterns in Istio's form ``<trust-domain>/ns/<ns>/sa/<sa>``.

A policy may spell a principal in any of the three forms of :mod:`meshward.identity.spiffe`
(``spiffe://td/ns/NS/sa/SA``, ``td/ns/NS/sa/SA``, the short ``NS/SA``); matching compares the
Istio form with the string forms of :mod:`meshward.patterns.strings`.
"""

from __future__ import annotations

__all__ = ["normalize_principal_pattern"]


def normalize_principal_pattern(value: str, trust_domain: str) -> str:
    """Rewrite a principal pattern to Istio's form: strip ``spiffe://``; expand the short form
    ``ns/sa`` (also ``ns/*``, ``ns/prefix*`` and ``*/sa``) with the mesh's trust domain."""
    if value == "*":
        return value
    if value.startswith("spiffe://"):
        return value[len("spiffe://") :]
    if value.count("/") == 1:
        ns, sa = value.split("/")
        if ns == "*":  # any namespace, this service account: a suffix match
            return f"*/sa/{sa}"
        return f"{trust_domain}/ns/{ns}/sa/{sa}"
    return value
