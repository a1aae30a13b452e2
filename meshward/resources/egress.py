"""``ExternalService`` (a host outside the mesh) and ``EgressPolicy`` (who may call it, and how).

``ExternalService`` is Istio's ServiceEntry idea: the host names an app may call through its
sidecar, the ports and whether the sidecar originates TLS to them (``HTTPS``) or not
(``HTTP``), optional fixed ``addresses`` (tests, private links; else DNS), the CA bundle that
verifies the server (default: the system trust store), the AI ``protocol`` (``openai``: models,
operations and token usage are understood on the way out), an optional ``pricing`` per model
(the cost of the tokens each identity spends, a denial-of-wallet signal) and an optional
``credential``: a
secret stored by the control plane (``meshward secret set``) that the caller's sidecar injects
as a header, replacing whatever key the app sent.

``EgressPolicy`` selects the CALLING workloads (``selector`` on their labels, in the policy's
namespace or the mesh root namespace) and lists what they may call outside: each ``to`` entry
has the fields of an AuthorizationPolicy operation (``hosts``, ``ports``, ``methods``,
``paths``, ``models``, ``aiOperations`` and their ``not*`` forms), matched the same way. There
is no action: rules only allow, and an external call no rule allows is refused (default deny).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from meshward.resources.authorization import Operation
from meshward.resources.base import Resource, Selector, Strict, register

__all__ = [
    "SECRET_NAME",
    "EgressPolicy",
    "EgressPolicySpec",
    "EgressRule",
    "EgressTo",
    "ExternalCredential",
    "ExternalPort",
    "ExternalService",
    "ExternalServiceSpec",
    "ModelPrice",
]

_HOST = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
)
_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+)(:\d{1,5})?$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
#: What a secret may be called (``meshward secret set NAME``): also a safe file name.
SECRET_NAME = r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$"


class ExternalPort(Strict):
    number: int = Field(ge=1, le=65535)
    protocol: Literal["HTTP", "HTTPS"] = "HTTPS"


class ExternalCredential(Strict):
    """The header the caller's sidecar sets from the secret: ``format`` with ``{secret}``."""

    secret: str = Field(pattern=SECRET_NAME)
    header: str = "Authorization"
    format: str = "Bearer {secret}"

    @field_validator("header")
    @classmethod
    def _header(cls, v: str) -> str:
        if not _HEADER_NAME.match(v):
            raise ValueError(f"{v!r} is not an HTTP header name")
        if v.lower() in ("host", "content-length", "transfer-encoding", "connection"):
            raise ValueError(f"{v!r} cannot carry a credential")
        return v

    @field_validator("format")
    @classmethod
    def _format(cls, v: str) -> str:
        if v.count("{secret}") != 1 or v.replace("{secret}", "").count("{") or "\r" in v or "\n" in v:
            raise ValueError('format must contain "{secret}" exactly once and no other braces or newlines')
        return v


class ModelPrice(Strict):
    """What a model costs at this provider, per million tokens (any currency: the metric's unit)."""

    model: str = Field(min_length=1)  # exact, or "prefix*"
    input_per_million: float = Field(ge=0, alias="inputPerMillion")
    output_per_million: float = Field(ge=0, alias="outputPerMillion")

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        if "*" in v[:-1]:
            raise ValueError(f"{v!r}: only a trailing '*' (prefix match) is allowed")
        return v


class ExternalServiceSpec(Strict):
    hosts: list[str] = Field(min_length=1)
    ports: list[ExternalPort] = Field(default_factory=lambda: [ExternalPort(number=443, protocol="HTTPS")])
    addresses: list[str] = Field(default_factory=list)
    ca_bundle: str | None = Field(default=None, alias="caBundle")
    protocol: Literal["openai", "http"] = "http"
    credential: ExternalCredential | None = None
    pricing: list[ModelPrice] = Field(default_factory=list)  # optional: cost of the tokens spent

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        out = []
        for host in v:
            host = host.lower().rstrip(".")
            if not _HOST.match(host):
                raise ValueError(f"{host!r} is not a DNS host name (no wildcards, no ports)")
            out.append(host)
        return out

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for address in v:
            m = _ADDRESS.match(address)
            if not m or (m.group(2) and not 0 < int(m.group(2)[1:]) <= 65535):
                raise ValueError(f"{address!r} is not HOST or HOST:PORT")
        return v

    @model_validator(mode="after")
    def _ports(self) -> ExternalServiceSpec:
        numbers = [p.number for p in self.ports]
        if not numbers:
            raise ValueError("ports: at least one port is needed")
        if len(set(numbers)) != len(numbers):
            raise ValueError("ports: each port number once")
        return self


@register
class ExternalService(Resource[ExternalServiceSpec]):
    kind_name = "ExternalService"


class EgressTo(Operation):
    """One destination pattern: an AuthorizationPolicy operation (same fields, same matching)."""


class EgressRule(Strict):
    """A match needs one of the ``to`` entries; a rule without ``to`` matches every external call."""

    to: list[EgressTo] = Field(default_factory=list)


class EgressPolicySpec(Strict):
    selector: Selector = Field(default_factory=Selector)
    rules: list[EgressRule] = Field(default_factory=list)


@register
class EgressPolicy(Resource[EgressPolicySpec]):
    kind_name = "EgressPolicy"
