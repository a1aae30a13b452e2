"""End-user authentication kinds: ``RequestAuthentication`` (Istio's schema) and ``ApiKey``.

``RequestAuthentication`` is accepted as Istio writes it (``security.istio.io/v1`` and
``v1beta1``) and means the same: a request that carries a token must carry a *valid* one
(else 401); a request with no token passes unauthenticated and authorization decides::

    apiVersion: security.istio.io/v1
    kind: RequestAuthentication
    metadata: {name: partners, namespace: edge}
    spec:
      selector: {matchLabels: {app: public-gateway}}
      jwtRules:
      - issuer: "https://idp.example"
        audiences: [partner-api]
        jwksUri: "http://127.0.0.1:9000/jwks.json"     # or jwks: '{"keys": [...]}' inline
        fromHeaders: [{name: Authorization, prefix: "Bearer "}]   # the default
        fromParams: [access_token]
        outputPayloadToHeader: x-jwt-payload
        outputClaimToHeaders: [{header: x-tenant, claim: tenant}]
        forwardOriginalToken: false

``ApiKey`` is written by ``meshward apikey create`` (never by hand in practice): the SHA-256 of a
key that was printed once, the request principal it stands for, and when it stops working. It
lives in the mesh's root namespace so every sidecar knows every key; only the hash travels.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any, Final

from pydantic import Field, field_validator, model_validator

from meshward.resources.base import API_VERSION, Resource, Selector, Strict, register

__all__ = [
    "ApiKey",
    "ApiKeySpec",
    "ClaimToHeader",
    "JwtHeader",
    "JwtRule",
    "RequestAuthentication",
    "RequestAuthenticationSpec",
]

_HEADER_NAME: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_SHA256_HEX: Final = re.compile(r"^[0-9a-f]{64}$")
# Headers the mesh sets itself: a rule must not be able to write them from a token's claims.
_RESERVED_HEADERS: Final = frozenset(
    {"x-forwarded-client-cert", "x-meshward-end-user", "host", "content-length", "transfer-encoding"}
)


def _check_header(name: str) -> str:
    if not _HEADER_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid header name")
    if name.lower() in _RESERVED_HEADERS:
        raise ValueError(f"header {name!r} is set by the mesh and cannot be written from a token")
    return name


class JwtHeader(Strict):
    """Where a token is read from: header ``name``, with ``prefix`` stripped (e.g. ``Bearer ``)."""

    name: str
    prefix: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _HEADER_NAME.match(v):
            raise ValueError(f"{v!r} is not a valid header name")
        return v


class ClaimToHeader(Strict):
    header: str
    claim: str = Field(min_length=1)

    @field_validator("header")
    @classmethod
    def _header(cls, v: str) -> str:
        return _check_header(v)


class JwtRule(Strict):
    """One trusted issuer. ``jwksUri`` or inline ``jwks`` gives its public keys."""

    issuer: str = Field(min_length=1)
    audiences: list[str] = Field(default_factory=list)
    jwks_uri: str | None = Field(default=None, alias="jwksUri")
    jwks: str | None = None
    from_headers: list[JwtHeader] = Field(default_factory=list, alias="fromHeaders")
    from_params: list[str] = Field(default_factory=list, alias="fromParams")
    from_cookies: list[str] = Field(default_factory=list, alias="fromCookies")
    output_payload_to_header: str | None = Field(default=None, alias="outputPayloadToHeader")
    output_claim_to_headers: list[ClaimToHeader] = Field(default_factory=list, alias="outputClaimToHeaders")
    forward_original_token: bool = Field(default=False, alias="forwardOriginalToken")
    timeout: str | None = None  # Istio's JWKS fetch timeout; accepted, see meshward.authn.jwks

    @field_validator("jwks_uri")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("https://", "http://")):
            raise ValueError(f"jwksUri {v!r} must be an http:// or https:// URL")
        return v

    @field_validator("jwks")
    @classmethod
    def _jwks(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            data = json.loads(v)
        except ValueError as exc:
            raise ValueError(f"jwks is not JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise ValueError('jwks must be a JSON Web Key Set: {"keys": [...]}')
        return v

    @field_validator("output_payload_to_header")
    @classmethod
    def _payload_header(cls, v: str | None) -> str | None:
        return None if v is None else _check_header(v)

    @model_validator(mode="after")
    def _keys(self) -> JwtRule:
        if self.jwks_uri is None and self.jwks is None:
            raise ValueError(f"jwtRules issuer {self.issuer!r}: jwksUri or jwks is required")
        return self


class RequestAuthenticationSpec(Strict):
    selector: Selector = Field(default_factory=Selector)
    jwt_rules: list[JwtRule] = Field(default_factory=list, alias="jwtRules")
    target_ref: dict[str, Any] | None = Field(default=None, alias="targetRef")
    target_refs: list[dict[str, Any]] = Field(default_factory=list, alias="targetRefs")

    @model_validator(mode="after")
    def _targets(self) -> RequestAuthenticationSpec:
        if self.target_ref is not None or self.target_refs:
            raise ValueError("targetRef(s) are for Kubernetes Gateway API resources; use selector")
        return self


@register
class RequestAuthentication(Resource[RequestAuthenticationSpec]):
    kind_name = "RequestAuthentication"
    api_versions = (API_VERSION, "security.istio.io/v1", "security.istio.io/v1beta1")


class ApiKeySpec(Strict):
    """A key's SHA-256 (hex), the principal it authenticates as, its expiry, whether revoked."""

    sha256: str
    principal: str = Field(min_length=1, max_length=256)
    expires: dt.datetime | None = None
    revoked: bool = False
    created: dt.datetime | None = None

    @field_validator("sha256")
    @classmethod
    def _hash(cls, v: str) -> str:
        if not _SHA256_HEX.match(v):
            raise ValueError("sha256 must be 64 lower-case hex digits")
        return v

    @field_validator("expires", "created")
    @classmethod
    def _aware(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("times need a time zone (e.g. 2026-12-31T00:00:00Z)")
        return v


@register
class ApiKey(Resource[ApiKeySpec]):
    kind_name = "ApiKey"
