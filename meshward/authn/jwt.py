"""Pure: verify a JWT against the issuers a workload trusts (PyJWT does the cryptography).

What is refused, whatever the keys say (each a 401 at the sidecar):

- ``alg: none`` and every HMAC algorithm: only asymmetric signatures (RS*, PS*, ES*, EdDSA) are
  accepted, and the algorithm must fit the key's type and curve (an ES256 token is checked only
  with a P-256 key, an RS256 token only with an RSA key). This closes the "HMAC with the public
  key as secret" confusion: no HS* token is ever verified, and symmetric JWKs are never loaded.
- an issuer no rule names; a token whose ``aud`` shares nothing with the rule's ``audiences``
  (when the rule lists any: Istio's meaning); ``exp`` in the past or ``nbf`` in the future
  beyond :data:`CLOCK_SKEW` (60 s, Envoy's default); a ``kid`` that names no key.

Verified tokens are cached (bounded) with their claims, so a caller that sends the same token on
every request pays one signature check per key-set generation, and ``exp`` is re-checked on every
hit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import jwt
from jwt import PyJWK

from meshward.authn.errors import TokenRefused

__all__ = [
    "ALLOWED_ALGORITHMS",
    "CLOCK_SKEW",
    "Claims",
    "IssuerKeys",
    "JwtVerifier",
    "TokenRefused",
    "keys_from_jwks",
]

ALLOWED_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
CLOCK_SKEW: Final = 60.0
_CACHE_MAX: Final = 10_000
_EC_ALG: Final = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


@dataclass(frozen=True, slots=True)
class Claims:
    """A verified token: Istio's request principal is ``iss/sub``."""

    issuer: str
    subject: str
    audiences: tuple[str, ...]
    presenter: str | None  # ``azp``
    payload: Mapping[str, Any] = field(default_factory=dict)

    @property
    def principal(self) -> str:
        return f"{self.issuer}/{self.subject}"


@dataclass(frozen=True, slots=True)
class IssuerKeys:
    """One rule's issuer, its audiences and its current usable public keys."""

    issuer: str
    audiences: tuple[str, ...]
    keys: tuple[PyJWK, ...]


def _algorithms_for(key: PyJWK) -> frozenset[str]:
    declared = key._jwk_data.get("alg")
    if key.key_type == "RSA":
        family = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
    elif key.key_type == "EC":
        alg = _EC_ALG.get(str(key._jwk_data.get("crv")))
        family = frozenset({alg}) if alg else frozenset()
    elif key.key_type == "OKP":
        family = frozenset({"EdDSA"})
    else:  # "oct" (HMAC secrets) and anything unknown: never
        family = frozenset()
    if isinstance(declared, str):
        return family & {declared}
    return family


def keys_from_jwks(document: str | Mapping[str, Any]) -> tuple[PyJWK, ...]:
    """The usable asymmetric keys of a JWKS (symmetric and unparsable keys are skipped)."""
    data = json.loads(document) if isinstance(document, str) else document
    keys: list[PyJWK] = []
    for item in data.get("keys", []) if isinstance(data, Mapping) else []:
        if not isinstance(item, Mapping) or item.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        if item.get("use", "sig") != "sig":
            continue
        try:
            key = PyJWK(dict(item))
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
        if _algorithms_for(key):
            keys.append(key)
    return tuple(keys)


def _audiences(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


class JwtVerifier:
    """Verifies tokens for a set of issuers; one instance per key-set generation."""

    def __init__(self, issuers: Sequence[IssuerKeys]) -> None:
        self._issuers = {i.issuer: i for i in issuers}
        self._cache: dict[str, tuple[Claims, float | None, float | None]] = {}

    @property
    def issuers(self) -> frozenset[str]:
        return frozenset(self._issuers)

    def verify(self, token: str, now: float) -> Claims:
        hit = self._cache.get(token)
        if hit is not None:
            claims, exp, nbf = hit
            self._check_times(exp, nbf, now)
            return claims
        claims, exp, nbf = self._verify(token, now)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[token] = (claims, exp, nbf)
        return claims

    @staticmethod
    def _check_times(exp: float | None, nbf: float | None, now: float) -> None:
        if exp is not None and now > exp + CLOCK_SKEW:
            raise TokenRefused("token expired")
        if nbf is not None and now + CLOCK_SKEW < nbf:
            raise TokenRefused("token not yet valid")

    def _verify(self, token: str, now: float) -> tuple[Claims, float | None, float | None]:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TokenRefused("malformed token") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise TokenRefused(f"algorithm {alg!r} is not accepted")
        issuer = unverified.get("iss")
        rule = self._issuers.get(issuer) if isinstance(issuer, str) else None
        if rule is None:
            raise TokenRefused("token issuer is not trusted here")
        kid = header.get("kid")
        candidates = [k for k in rule.keys if (kid is None or k.key_id == kid) and alg in _algorithms_for(k)]
        if not candidates:
            raise TokenRefused("no key of the issuer matches the token")
        payload: dict[str, Any] | None = None
        for key in candidates:
            try:
                payload = jwt.decode(
                    token,
                    key=key.key,
                    algorithms=[alg],
                    options={
                        "verify_aud": False,
                        "verify_exp": False,
                        "verify_nbf": False,
                        "verify_iat": False,
                    },
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError:
                raise TokenRefused("malformed token") from None
        if payload is None:
            raise TokenRefused("bad token signature")
        exp = payload.get("exp")
        nbf = payload.get("nbf")
        for name, value in (("exp", exp), ("nbf", nbf)):
            if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
                raise TokenRefused(f"claim {name} is not a number")
        exp_f = float(exp) if exp is not None else None
        nbf_f = float(nbf) if nbf is not None else None
        self._check_times(exp_f, nbf_f, now)
        audiences = _audiences(payload.get("aud"))
        if rule.audiences and not set(audiences) & set(rule.audiences):
            raise TokenRefused("token audience is not accepted")
        subject = payload.get("sub")
        presenter = payload.get("azp")
        claims = Claims(
            issuer=rule.issuer,
            subject=subject if isinstance(subject, str) else "",
            audiences=audiences,
            presenter=presenter if isinstance(presenter, str) else None,
            payload=payload,
        )
        return claims, exp_f, nbf_f
