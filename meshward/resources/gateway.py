"""``Gateway``: an ingress for callers outside the mesh, routed to mesh services.

```yaml
apiVersion: meshward.dev/v1alpha1
kind: Gateway
metadata: {name: public, namespace: edge, labels: {app: public-gateway}}
spec:
  port: 0                                   # 0 = pick a free one
  address: 127.0.0.1                        # where to listen (default loopback)
  tls: {certFile: gw.pem, keyFile: gw.key}  # optional; without it: plain HTTP
  routes:                                   # first match wins (Gateway API's HTTPRoute in small)
  - match: {pathPrefix: /v1/}               # or path: /exact, hosts: [api.example.com], methods: [POST]
    to: {service: chat.llm}                 # SERVICE.NAMESPACE, or SERVICE in the gateway's namespace
```

The gateway's identity is ``spiffe://<td>/ns/<namespace>/sa/<name>``: it calls services over
mTLS as itself, so policies name it like any caller, and sidecars trust the end user it
authenticated (``x-meshward-end-user``) only from it.
"""

from __future__ import annotations

import re
from typing import Final

from pydantic import Field, field_validator, model_validator

from meshward.resources.base import Resource, Strict, register

__all__ = ["Gateway", "GatewayMatch", "GatewayRoute", "GatewaySpec", "GatewayTarget", "GatewayTls"]

_SERVICE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)?$")
_METHOD: Final = re.compile(r"^[A-Z]+$")


class GatewayTls(Strict):
    cert_file: str = Field(alias="certFile", min_length=1)
    key_file: str = Field(alias="keyFile", min_length=1)


class GatewayMatch(Strict):
    path_prefix: str | None = Field(default=None, alias="pathPrefix")
    path: str | None = None
    hosts: list[str] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=list)

    @field_validator("path_prefix", "path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"{v!r} must start with /")
        return v

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        for m in v:
            if not _METHOD.match(m):
                raise ValueError(f"{m!r} is not an HTTP method in upper case")
        return v

    @model_validator(mode="after")
    def _one_path(self) -> GatewayMatch:
        if self.path is not None and self.path_prefix is not None:
            raise ValueError("give path or pathPrefix, not both")
        return self


class GatewayTarget(Strict):
    service: str

    @field_validator("service")
    @classmethod
    def _service(cls, v: str) -> str:
        if not _SERVICE.match(v):
            raise ValueError(f"{v!r} is not SERVICE or SERVICE.NAMESPACE")
        return v


class GatewayRoute(Strict):
    match: GatewayMatch = Field(default_factory=GatewayMatch)
    to: GatewayTarget


class GatewaySpec(Strict):
    port: int = Field(default=0, ge=0, le=65535)
    address: str = "127.0.0.1"
    tls: GatewayTls | None = None
    routes: list[GatewayRoute] = Field(default_factory=list)


@register
class Gateway(Resource[GatewaySpec]):
    kind_name = "Gateway"
