"""``Mesh`` (mesh-wide settings) and ``Workload`` (a service run in local mode)."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from meshward.resources.base import Resource, Strict, register

__all__ = [
    "AuditSettings",
    "AuditSink",
    "Mesh",
    "MeshSpec",
    "ModelPrice",
    "MtlsSettings",
    "OutboundTrafficPolicy",
    "PathNormalization",
    "Readiness",
    "TelemetrySettings",
    "Workload",
    "WorkloadSpec",
    "parse_duration",
]

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``"90s"``, ``"10m"``, ``"1h"``, ``"7d"`` → seconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"invalid duration {text!r} (expected e.g. 500ms, 30s, 10m, 1h, 7d)")
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


class MtlsSettings(Strict):
    mode: Literal["STRICT", "PERMISSIVE"] = "STRICT"


class OutboundTrafficPolicy(Strict):
    mode: Literal["REGISTRY_ONLY", "ALLOW_ANY"] = "REGISTRY_ONLY"


class AuditSink(Strict):
    """Where the control plane forwards audit records (see ``meshward.audit.sinks``).

    ``syslog``: RFC 5424 over TCP (octet-counting framing, RFC 6587), TLS when ``tls`` (RFC 5425);
    ``file``: JSON lines; ``http``: batched POSTs of a JSON array. Each sink has its own cursor
    on disk: a sink that is down holds nothing up and misses nothing.
    """

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    type: Literal["syslog", "file", "http"]
    address: str | None = Field(default=None, pattern=r"^[^\s:]+:\d+$")  # syslog host:port
    tls: bool = False
    ca_file: str | None = Field(default=None, alias="caFile")
    server_name: str | None = Field(default=None, alias="serverName")
    path: str | None = None  # file
    url: str | None = Field(default=None, pattern=r"^https?://")  # http
    format: Literal["ocsf", "cef"] = "ocsf"  # the message (syslog MSG, file line, http item)
    batch_size: int = Field(default=200, ge=1, le=10000, alias="batchSize")

    @model_validator(mode="after")
    def _target(self) -> AuditSink:
        needed = {"syslog": "address", "file": "path", "http": "url"}[self.type]
        if getattr(self, needed) is None:
            raise ValueError(f"audit sink {self.name!r} of type {self.type} needs {needed!r}")
        return self


class AuditSettings(Strict):
    sinks: list[AuditSink] = Field(default_factory=list)
    # Also audit plain allowed requests (always audited: denies, dry-run denies, AUDIT marks,
    # limits, DLP findings). Off by default: it costs ~50 µs of sidecar CPU per request, and
    # every request is in the access log anyway (see bench/telemetry.py).
    record_allowed: bool = Field(default=False, alias="recordAllowed")


class TelemetrySettings(Strict):
    # Sidecar access log: "state" (<sidecar state>/access.log), "stdout", or "off".
    access_log: Literal["state", "stdout", "off"] = Field(default="state", alias="accessLog")
    # OTLP/HTTP traces endpoint (e.g. http://127.0.0.1:4318/v1/traces); unset: no export.
    otlp_endpoint: str | None = Field(default=None, alias="otlpEndpoint", pattern=r"^https?://")


class InterceptionSettings(Strict):
    """What transparent interception leaves alone (``isolation: netns``), like Istio's
    ``excludeOutboundPorts`` / ``excludeOutboundIPRanges`` annotations."""

    exclude_outbound_ports: list[int] = Field(default_factory=list, alias="excludeOutboundPorts")
    exclude_outbound_cidrs: list[str] = Field(default_factory=list, alias="excludeOutboundCIDRs")

    @field_validator("exclude_outbound_ports")
    @classmethod
    def _ports(cls, v: list[int]) -> list[int]:
        for port in v:
            if not 0 < port <= 65535:
                raise ValueError(f"{port} is not a port number (1-65535)")
        return v

    @field_validator("exclude_outbound_cidrs")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for cidr in v:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IP range (e.g. 192.0.2.0/24)") from None
        return v


class ModelPrice(Strict):
    """What one model costs, per million tokens (``model: "*"`` prices every other model)."""

    model: str
    input_per_million: float = Field(default=0.0, ge=0, alias="inputPerMillion")
    output_per_million: float = Field(default=0.0, ge=0, alias="outputPerMillion")
    currency: str = "USD"


class PathNormalization(Strict):
    """How the inbound sidecar treats ``%2F``/``%5C`` in paths (Istio's ``pathNormalization``):
    ``reject`` (400, the default) or ``decode`` (into ``/``, then dot segments and slashes merge)."""

    encoded_slashes: Literal["reject", "decode"] = Field(default="reject", alias="encodedSlashes")


class MeshSpec(Strict):
    trust_domain: str = Field(default="demo.local", alias="trustDomain", pattern=r"^[a-z0-9._-]+$")
    # Istio's trustDomainAliases: policy principals in these trust domains mean this mesh's.
    trust_domain_aliases: list[str] = Field(default_factory=list, alias="trustDomainAliases")
    mtls: MtlsSettings = Field(default_factory=MtlsSettings)
    default_policy: Literal["deny", "allow"] = Field(default="deny", alias="defaultPolicy")
    certificate_ttl: str = Field(default="1h", alias="certificateTTL")
    outbound_traffic_policy: OutboundTrafficPolicy = Field(
        default_factory=OutboundTrafficPolicy, alias="outboundTrafficPolicy"
    )
    root_namespace: str = Field(default="meshward-system", alias="rootNamespace")
    # Prices for `meshward usage` (optional): per model, cost per 1M input / output tokens.
    pricing: list[ModelPrice] = Field(default_factory=list)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    # netns: every Workload in its own network namespace, its app as its own user, traffic
    # redirected through its sidecar with iptables (root only; see meshward.isolation).
    isolation: Literal["none", "netns"] = "none"
    interception: InterceptionSettings = Field(default_factory=InterceptionSettings)
    path_normalization: PathNormalization = Field(
        default_factory=PathNormalization, alias="pathNormalization"
    )

    @field_validator("certificate_ttl")
    @classmethod
    def _ttl(cls, v: str) -> str:
        seconds = parse_duration(v)
        if not 60 <= seconds <= 86400:
            raise ValueError("certificateTTL must be between 1m and 24h")
        return v


@register
class Mesh(Resource[MeshSpec]):
    kind_name = "Mesh"


class Readiness(Strict):
    http_get: str | None = Field(default=None, alias="httpGet", pattern=r"^/")
    timeout: str = "30s"


class SidecarSettings(Strict):
    """The workload's sidecar process (Istio's ``proxy.istio.io/config`` ``concurrency``):
    ``workers`` processes share its listeners (SO_REUSEPORT); each takes the config itself."""

    workers: int = Field(default=1, ge=1, le=64)


class WorkloadSpec(Strict):
    """``type: Service`` (default) serves on ``port`` and is waited on until ready; ``type: Job``
    is a batch job or client: a sidecar and an identity, no port, no readiness wait, and it may
    finish. ``restartPolicy`` has Kubernetes' meanings (default: Always for a Service, Never for
    a Job): Always restarts whenever it exits, OnFailure only after a non-zero exit, Never never.
    """

    type: Literal["Service", "Job"] = "Service"
    restart_policy: Literal["Always", "OnFailure", "Never"] | None = Field(
        default=None, alias="restartPolicy"
    )
    service: str | None = None
    service_account: str | None = Field(default=None, alias="serviceAccount")
    port: int = Field(default=0, ge=0, le=65535)
    command: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    readiness: Readiness = Field(default_factory=Readiness)
    workdir: str | None = None
    isolation: Literal["none", "netns"] | None = None  # None: the Mesh's setting
    sidecar: SidecarSettings = Field(default_factory=SidecarSettings)

    @model_validator(mode="after")
    def _job(self) -> WorkloadSpec:
        if self.type == "Job" and self.port:
            raise ValueError("a Job has no port (it serves nothing): remove port or use type: Service")
        if self.type == "Job" and not self.command:
            raise ValueError("a Job needs a command to run")
        return self

    @property
    def restart(self) -> Literal["Always", "OnFailure", "Never"]:
        """The effective restart policy."""
        return self.restart_policy or ("Never" if self.type == "Job" else "Always")


@register
class Workload(Resource[WorkloadSpec]):
    kind_name = "Workload"

    @property
    def service(self) -> str:
        return self.spec.service or self.metadata.name

    @property
    def service_account(self) -> str:
        return self.spec.service_account or self.service
