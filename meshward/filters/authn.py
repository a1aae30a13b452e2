"""The end-user authentication filter: JWTs per ``RequestAuthentication`` and API keys.

It runs first in the chain (before authorization, which reads what it found). Istio's rules:

- a request with no token passes unauthenticated (``requestPrincipals`` then match nothing, so
  an ALLOW that names them refuses it — authorization decides);
- a request with a token that is not valid here (bad signature, expired, unknown issuer, wrong
  audience, ``alg: none``, HMAC) is refused with **401** and ``WWW-Authenticate``;
- a valid token makes ``request.auth.principal`` = ``iss/sub`` (``requestPrincipals``), its
  audiences, presenter (``azp``) and claims available to policies and rate-limit keys; the token
  is removed before the request goes on unless ``forwardOriginalToken``; an API key is always
  removed (the model never sees it).

The end user travels on in ``x-meshward-end-user`` (the principal), which this filter always
strips from incoming requests first, except when the peer is one of the mesh's gateways (its
SPIFFE ID is in the snapshot's ``gateways``): a model's sidecar can then enforce
``requestPrincipals`` on calls that a gateway authenticated, and the model can trust the header.

API keys are accepted where a RequestAuthentication selects the workload (``jwtRules: []`` is
enough) and at every gateway.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl, urlencode

from meshward.authn.apikeys import ApiKeyEntry, ApiKeyTable, epoch
from meshward.authn.enduser import EndUser, claim_value
from meshward.authn.errors import TokenRefused
from meshward.authn.tokens import DEFAULT_LOCATIONS, Credential, Location, find_credential
from meshward.authz.engine import select_policies
from meshward.http.hygiene import END_USER

if TYPE_CHECKING:
    from meshward.authn.jwks import RemoteKeySet
    from meshward.authn.jwt import IssuerKeys, JwtVerifier
from meshward.config.snapshot import MeshSnapshot
from meshward.filters.base import Denial, Filter, RequestContext, SidecarRuntime
from meshward.resources.authentication import ApiKey, JwtRule, RequestAuthentication

__all__ = ["END_USER_HEADER", "AuthnFilter", "api_key_table", "build"]

END_USER_HEADER: Final = END_USER


def api_key_table(snapshot: MeshSnapshot) -> ApiKeyTable:
    keys = [r for r in snapshot.of_kind(ApiKey.kind_name) if isinstance(r, ApiKey)]
    return ApiKeyTable(
        (
            k.spec.sha256,
            ApiKeyEntry(
                name=f"{k.metadata.namespace}/{k.metadata.name}",
                principal=k.spec.principal,
                expires=epoch(k.spec.expires),
                revoked=k.spec.revoked,
            ),
        )
        for k in keys
        if k.metadata.namespace == snapshot.mesh.root_namespace
    )


class _Issuer:
    """One jwtRule at run time: where its tokens are, and its keys (inline or remote).

    PyJWT and httpx are imported here, by sidecars that have a jwtRule, not by every sidecar."""

    def __init__(self, rule: JwtRule) -> None:
        from meshward.authn.jwks import remote_key_set
        from meshward.authn.jwt import keys_from_jwks

        self.rule = rule
        self.locations: tuple[Location, ...] = (
            tuple(Location("header", h.name.lower(), h.prefix) for h in rule.from_headers)
            + tuple(Location("param", p) for p in rule.from_params)
            + tuple(Location("cookie", c) for c in rule.from_cookies)
        )
        if not self.locations:
            self.locations = DEFAULT_LOCATIONS
        self.inline = keys_from_jwks(rule.jwks) if rule.jwks is not None else None
        self.remote: RemoteKeySet | None = remote_key_set(rule.jwks_uri) if rule.jwks_uri else None

    def keys(self) -> IssuerKeys:
        from meshward.authn.jwt import IssuerKeys

        keys = self.inline if self.inline is not None else (self.remote.keys if self.remote else ())
        return IssuerKeys(self.rule.issuer, tuple(self.rule.audiences), keys)


class AuthnFilter(Filter):
    name = "authn"
    # Always in the chain: it must not cost every request a Task. Its only wait (a JWKS fetch in
    # a worker thread) needs no Task up front.
    eager_safe = True

    def __init__(
        self, issuers: Sequence[_Issuer], api_keys: ApiKeyTable | None, gateways: frozenset[str]
    ) -> None:
        self.issuers = list(issuers)
        self.api_keys = api_keys
        self.gateways = gateways
        self.locations = tuple(dict.fromkeys(loc for i in issuers for loc in i.locations))
        self._verifier: JwtVerifier | None = None
        self._versions: tuple[int, ...] = ()

    def _current_verifier(self) -> JwtVerifier:
        versions = tuple(i.remote.version if i.remote else 0 for i in self.issuers)
        if self._verifier is None or versions != self._versions:
            from meshward.authn.jwt import JwtVerifier

            self._verifier = JwtVerifier([i.keys() for i in self.issuers])
            self._versions = versions
        return self._verifier

    async def _verify_jwt(self, token: str) -> EndUser:
        now = time.time()
        mono = time.monotonic()
        stale = [i.remote for i in self.issuers if i.remote is not None and i.remote.stale(mono)]
        for remote in stale:
            if remote.may_refetch(mono) or remote.fetched_at is None:
                await remote.refresh()
        try:
            claims = self._current_verifier().verify(token, now)
        except TokenRefused as exc:
            # An unseen key id may be a rotation the cache has not caught up with yet.
            remotes = [i.remote for i in self.issuers if i.remote is not None and i.remote.may_refetch(mono)]
            if exc.reason != "no key of the issuer matches the token" or not remotes:
                raise
            for remote in remotes:
                await remote.refresh()
            claims = self._current_verifier().verify(token, now)
        return EndUser(
            principal=claims.principal,
            via="jwt",
            audiences=claims.audiences,
            presenter=claims.presenter,
            claims=claims.payload,
        )

    async def on_request(self, ctx: RequestContext) -> Denial | None:
        headers = ctx.headers
        forwarded = headers.pop(END_USER_HEADER, None)
        if forwarded is not None and ctx.peer.spiffe_id in self.gateways:
            ctx.end_user = EndUser(
                principal=forwarded, via="apikey" if forwarded.startswith("apikeys/") else "jwt"
            )
        if not self.issuers and self.api_keys is None:
            if ctx.end_user is not None:
                headers[END_USER_HEADER] = ctx.end_user.principal
            return None
        cred = find_credential(headers, ctx.query, self.locations, self.api_keys is not None)
        if cred is not None:
            try:
                if cred.kind == "apikey":
                    ctx.end_user = self._api_key(cred)
                else:
                    ctx.end_user = await self._verify_jwt(cred.value)
            except TokenRefused as exc:
                return _refusal(exc.reason)
            self._consume(ctx, cred)
        if ctx.end_user is not None:
            headers[END_USER_HEADER] = ctx.end_user.principal
        return None

    def _api_key(self, cred: Credential) -> EndUser:
        assert self.api_keys is not None
        entry, reason = self.api_keys.authenticate(cred.value, time.time())
        if entry is None:
            raise TokenRefused(reason)
        return EndUser(principal=entry.principal, via="apikey")

    def _consume(self, ctx: RequestContext, cred: Credential) -> None:
        """Remove the credential unless a rule forwards it; write the payload/claim headers."""
        rule = self._rule_of(ctx.end_user) if cred.kind == "jwt" else None
        forward = rule is not None and rule.forward_original_token
        if not forward:
            loc = cred.location
            if loc.where == "header":
                ctx.headers.pop(loc.name, None)
            elif loc.where == "param":
                kept = [(k, v) for k, v in parse_qsl(ctx.query, keep_blank_values=True) if k != loc.name]
                ctx.query = urlencode(kept)
        if rule is None or ctx.end_user is None:
            return
        if rule.output_payload_to_header:
            raw = json.dumps(dict(ctx.end_user.claims), separators=(",", ":"), sort_keys=True).encode()
            ctx.headers[rule.output_payload_to_header.lower()] = (
                base64.urlsafe_b64encode(raw).decode().rstrip("=")
            )
        for item in rule.output_claim_to_headers:
            values = claim_value(ctx.end_user.claims, tuple(item.claim.split(".")))
            if values:
                ctx.headers[item.header.lower()] = ",".join(values)

    def _rule_of(self, user: EndUser | None) -> JwtRule | None:
        if user is None:
            return None
        issuer = user.claims.get("iss")
        for i in self.issuers:
            if i.rule.issuer == issuer:
                return i.rule
        return None


def _refusal(reason: str) -> Denial:
    return Denial(
        kind="authn",
        status=401,
        message=f"authentication failed: {reason}",
        headers=[("www-authenticate", f'Bearer error="invalid_token", error_description="{reason}"')],
    )


def build(snapshot: MeshSnapshot, runtime: SidecarRuntime) -> Filter | None:
    """Always built (it strips the end-user header from untrusted peers)."""
    policies = select_policies(
        snapshot.of_kind(RequestAuthentication.kind_name),
        snapshot.workload,
        snapshot.mesh.root_namespace,
        RequestAuthentication,
    )
    issuers: dict[str, _Issuer] = {}
    for p in policies:
        for rule in p.spec.jwt_rules:
            issuers.setdefault(rule.issuer, _Issuer(rule))
    is_gateway = snapshot.workload.spiffe_id(snapshot.trust_domain) in snapshot.gateways
    keys = api_key_table(snapshot) if (policies or is_gateway) else None
    return AuthnFilter(list(issuers.values()), keys, frozenset(snapshot.gateways))
