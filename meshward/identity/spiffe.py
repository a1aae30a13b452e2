"""SPIFFE IDs of workloads and the three spellings users may write them in.

Everywhere an identity is accepted (CLI, policies) these mean the same workload:

- ``spiffe://demo.local/ns/ml/sa/fraud-model``  (the SPIFFE URI)
- ``demo.local/ns/ml/sa/fraud-model``           (Istio's principal form)
- ``ml/fraud-model``                            (short form: namespace/service-account)

Parsing follows the SPIFFE ID specification: the whole text must match (``fullmatch``, so no
trailing newline slips through), the trust domain is ``[a-z0-9._-]`` (at most 255 characters),
path segments are ``[A-Za-z0-9._-]``, never empty, ``.`` or ``..``, and a URI is at most 2048
bytes. The ``meshward-system`` namespace is reserved for the mesh's own components
(:func:`is_reserved`): the authority never issues an identity in it to a workload.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SYSTEM_NAMESPACE", "InvalidSpiffeId", "SpiffeId", "is_reserved", "parse_identity"]

_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
MAX_URI_LENGTH = 2048
#: The namespace of the mesh's own identities (the control plane, the operator).
SYSTEM_NAMESPACE = "meshward-system"


class InvalidSpiffeId(ValueError):
    """The text is not an identity in any accepted spelling."""


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A workload identity ``spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>``."""

    trust_domain: str
    namespace: str
    service_account: str

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @property
    def principal(self) -> str:
        """Istio's principal form, without the scheme."""
        return f"{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @property
    def short(self) -> str:
        return f"{self.namespace}/{self.service_account}"

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def from_uri(cls, uri: str) -> SpiffeId:
        """Parse a full ``spiffe://`` URI (what a certificate's URI SAN holds)."""
        if not uri.startswith("spiffe://"):
            raise InvalidSpiffeId(f"not a SPIFFE URI: {uri[:80]!r}")
        if len(uri) > MAX_URI_LENGTH:
            raise InvalidSpiffeId(f"SPIFFE URI longer than {MAX_URI_LENGTH} characters")
        return _from_principal(uri[len("spiffe://") :], uri)


def _from_principal(text: str, original: str) -> SpiffeId:
    parts = text.split("/")
    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
        raise InvalidSpiffeId(
            f"expected <trust-domain>/ns/<namespace>/sa/<service-account>: {original[:200]!r}"
        )
    td, _, ns, _, sa = parts
    _check(td, ns, sa, original)
    return SpiffeId(td, ns, sa)


def _check(td: str, ns: str, sa: str, original: str) -> None:
    shown = original[:200]
    if not _TRUST_DOMAIN.fullmatch(td):
        raise InvalidSpiffeId(f"invalid trust domain {td[:80]!r} in {shown!r}")
    for seg in (ns, sa):
        if not _SEGMENT.fullmatch(seg) or seg in (".", ".."):
            raise InvalidSpiffeId(f"invalid path segment {seg[:80]!r} in {shown!r}")


def is_reserved(sid: SpiffeId) -> bool:
    """An identity of the mesh itself (``meshward-system/*``): never issued to a workload."""
    return sid.namespace == SYSTEM_NAMESPACE


def parse_identity(text: str, trust_domain: str) -> SpiffeId:
    """Parse any accepted spelling; the short form takes the mesh's trust domain."""
    text = text.strip()
    if len(text) > MAX_URI_LENGTH:
        raise InvalidSpiffeId(f"identity longer than {MAX_URI_LENGTH} characters")
    if text.startswith("spiffe://"):
        return SpiffeId.from_uri(text)
    if text.count("/") == 1:
        ns, sa = text.split("/")
        _check(trust_domain, ns, sa, text)
        return SpiffeId(trust_domain, ns, sa)
    return _from_principal(text, text)
