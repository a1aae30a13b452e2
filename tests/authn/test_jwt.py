"""JWT verification (pure): what is accepted, what is refused, and that nothing else escapes."""

from __future__ import annotations

import base64
import hmac
import json
import time
from hashlib import sha256

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.authn.jwt import IssuerKeys, JwtVerifier, TokenRefused, keys_from_jwks
from tests.authn.keys import Idp, make_idp

IDPS = {alg: make_idp(alg=alg, kid=f"k-{alg}") for alg in ("ES256", "RS256", "EdDSA")}
OTHER = make_idp(issuer="https://evil.example", alg="ES256", kid="k-ES256")  # same kid, other key


def verifier(idp: Idp, audiences: tuple[str, ...] = ()) -> JwtVerifier:
    return JwtVerifier([IssuerKeys(idp.issuer, audiences, keys_from_jwks(idp.jwks()))])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unsigned(payload: dict[str, object], alg: str = "none") -> str:
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{head}.{b64(json.dumps(payload).encode())}."


@pytest.mark.parametrize("alg", sorted(IDPS))
def test_valid_tokens_give_the_request_principal_and_claims(alg: str) -> None:
    idp = IDPS[alg]
    claims = verifier(idp, ("api",)).verify(
        idp.token(sub="alice", aud=["api", "x"], azp="web", groups=["a"]), time.time()
    )
    assert claims.principal == f"{idp.issuer}/alice"
    assert claims.audiences == ("api", "x") and claims.presenter == "web"
    assert claims.payload["groups"] == ["a"]


def _hs256_with_public_key(idp: Idp) -> str:
    """The classic confusion: sign with HMAC, using the issuer's PUBLIC key as the secret."""
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": idp.kid}).encode())
    body = b64(json.dumps({"iss": idp.issuer, "sub": "mallory", "exp": int(time.time()) + 600}).encode())
    sig = hmac.new(idp.public_pem(), f"{head}.{body}".encode(), sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


ES = IDPS["ES256"]
NOW = int(time.time())
REFUSED = [
    ("expired", ES.token(exp=NOW - 3600), "token expired"),
    ("not yet valid", ES.token(nbf=NOW + 3600), "token not yet valid"),
    ("wrong issuer", OTHER.token(), "token issuer is not trusted here"),
    ("wrong audience", ES.token(aud="someone-else"), "token audience is not accepted"),
    ("no audience", ES.token(), "token audience is not accepted"),
    ("bad signature", ES.token()[:-6] + "AAAAAA", "bad token signature"),
    ("other key, same kid", OTHER.token(iss=ES.issuer), "bad token signature"),
    ("alg none", unsigned({"iss": ES.issuer, "sub": "x"}), "algorithm 'none' is not accepted"),
    ("HS256 with the public key", _hs256_with_public_key(ES), "algorithm 'HS256' is not accepted"),
    (
        "RS256 header on an EC key",
        unsigned({"iss": ES.issuer}, "RS256") + "c2ln",
        "no key of the issuer matches",
    ),
    ("garbage", "not.a.token", "malformed token"),
    ("exp not a number", ES.token(exp="tomorrow"), "claim exp is not a number"),
]


@pytest.mark.parametrize(("name", "token", "reason"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_tokens_say_why(name: str, token: str, reason: str) -> None:
    with pytest.raises(TokenRefused) as info:
        verifier(ES, ("api",)).verify(token, time.time())
    assert info.value.reason.startswith(reason)


def test_clock_skew_is_bounded_and_the_cache_rechecks_expiry() -> None:
    v = verifier(ES)
    token = ES.token(exp=NOW + 30)
    v.verify(token, NOW)  # cached now
    v.verify(token, NOW + 30 + 59)  # within the 60 s skew
    with pytest.raises(TokenRefused, match="expired"):
        v.verify(token, NOW + 30 + 61)  # the cached token is refused once expired


def test_symmetric_and_foreign_keys_are_never_loaded() -> None:
    doc = {
        "keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "h"},
            {"kty": "EC", "crv": "P-256", "x": "bad", "y": "bad", "kid": "broken"},
            {**ES.jwk, "use": "enc"},
            ES.jwk,
        ]
    }
    keys = keys_from_jwks(doc)
    assert [k.key_id for k in keys] == [ES.kid]


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300), st.binary(max_size=300).map(lambda b: b64(b) + "." + b64(b) + "." + b64(b))
    )
)
def test_any_input_is_either_valid_or_refused(text: str) -> None:
    try:
        verifier(ES).verify(text, time.time())
    except TokenRefused:
        pass


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["iss", "sub", "aud", "exp", "nbf", "azp"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=8), st.lists(st.text(max_size=4), max_size=3)),
    )
)
def test_any_signed_payload_is_valid_or_refused(claims: dict[str, object]) -> None:
    body = json.dumps({"iss": ES.issuer, **claims}).encode()  # signed as is, unchecked by the minter
    token = jwt.PyJWS().encode(body, ES.private, algorithm="ES256", headers={"kid": ES.kid})
    try:
        verifier(ES).verify(token, time.time())
    except TokenRefused:
        pass
