"""Pure: find the credential a request carries (a JWT, an API key, or none).

Istio's defaults: a JWT is read from ``Authorization: Bearer <token>`` and the ``access_token``
query parameter unless a rule names ``fromHeaders`` / ``fromParams`` / ``fromCookies``. An API
key is read from ``x-api-key`` or from ``Authorization: Bearer mwk_…`` (what the ``openai`` SDK
sends as its ``api_key``); the ``mwk_`` prefix tells it from a JWT.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

from meshward.authn.apikeys import KEY_PREFIX

__all__ = ["DEFAULT_LOCATIONS", "Credential", "Location", "find_credential"]


@dataclass(frozen=True, slots=True)
class Location:
    where: Literal["header", "param", "cookie"]
    name: str  # lower-case for headers
    prefix: str = ""


DEFAULT_LOCATIONS = (Location("header", "authorization", "Bearer "), Location("param", "access_token"))


@dataclass(frozen=True, slots=True)
class Credential:
    kind: Literal["jwt", "apikey"]
    value: str
    location: Location


def _cookies(header: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name not in out:
            out[name] = value
    return out


def find_credential(
    headers: Mapping[str, str], query: str, locations: Iterable[Location], api_keys: bool
) -> Credential | None:
    """The first credential found: API-key places first (when keys are on), then JWT places."""
    if api_keys:
        key = headers.get("x-api-key")
        if key:
            return Credential("apikey", key.strip(), Location("header", "x-api-key"))
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and auth[7:].strip().startswith(KEY_PREFIX):
            return Credential("apikey", auth[7:].strip(), Location("header", "authorization", "Bearer "))
    params: dict[str, str] | None = None
    cookies: dict[str, str] | None = None
    for loc in locations:
        value: str | None
        if loc.where == "header":
            value = headers.get(loc.name)
            if value is not None and loc.prefix:
                if value[: len(loc.prefix)].lower() != loc.prefix.lower():
                    continue
                value = value[len(loc.prefix) :]
        elif loc.where == "param":
            if params is None:
                params = dict(reversed(parse_qsl(query, keep_blank_values=True)))
            value = params.get(loc.name)
        else:
            if cookies is None:
                cookies = _cookies(headers.get("cookie", ""))
            value = cookies.get(loc.name)
        if value is not None and value.strip():
            value = value.strip()
            if value.startswith(KEY_PREFIX) and api_keys:
                return Credential("apikey", value, loc)
            return Credential("jwt", value, loc)
    return None
