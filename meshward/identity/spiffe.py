"""SPIFFE IDs of workloads and the three spellings users may write them in.

Everywhere an identity is accepted (CLI, policies) these mean the same workload:

- ``spiffe://demo.local/ns/ml/sa/fraud-model``  (the SPIFFE URI)
- ``demo.local/ns/ml/sa/fraud-model``           (Istio's principal form)
- ``ml/fraud-model``                            (short form: namespace/service-account)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["InvalidSpiffeId", "SpiffeId", "parse_identity"]

_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")


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
            raise InvalidSpiffeId(f"not a SPIFFE URI: {uri!r}")
        return _from_principal(uri[len("spiffe://") :], uri)


def _from_principal(text: str, original: str) -> SpiffeId:
    parts = text.split("/")
    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
        raise InvalidSpiffeId(f"expected <trust-domain>/ns/<namespace>/sa/<service-account>: {original!r}")
    td, _, ns, _, sa = parts
    _check(td, ns, sa, original)
    return SpiffeId(td, ns, sa)


def _check(td: str, ns: str, sa: str, original: str) -> None:
    if not _TRUST_DOMAIN.match(td):
        raise InvalidSpiffeId(f"invalid trust domain {td!r} in {original!r}")
    for seg in (ns, sa):
        if not _SEGMENT.match(seg):
            raise InvalidSpiffeId(f"invalid path segment {seg!r} in {original!r}")


def parse_identity(text: str, trust_domain: str) -> SpiffeId:
    """Parse any accepted spelling; the short form takes the mesh's trust domain."""
    text = text.strip()
    if text.startswith("spiffe://"):
        return SpiffeId.from_uri(text)
    if text.count("/") == 1:
        ns, sa = text.split("/")
        _check(trust_domain, ns, sa, text)
        return SpiffeId(trust_domain, ns, sa)
    return _from_principal(text, text)
