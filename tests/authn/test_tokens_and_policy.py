"""Where credentials are found, and what policies and rate limits make of the end user (pure)."""

from __future__ import annotations

import pytest
import yaml

from meshward.authn.apikeys import ApiKeyEntry, ApiKeyTable, hash_key, new_key
from meshward.authn.enduser import EndUser, claim_value
from meshward.authn.tokens import DEFAULT_LOCATIONS, Location, find_credential
from meshward.authz.attributes import RequestAttributes
from meshward.authz.engine import compile_engine
from meshward.config.snapshot import WorkloadInfo
from meshward.filters.authz import end_user_attributes
from meshward.ratelimit.compile import RequestFacts, compile_limit
from meshward.resources.loader import LoadError, load_text
from meshward.resources.ratelimit import RateLimit

KEY = "mwk_" + "a" * 43
CRED_CASES = [
    ({"authorization": "Bearer eyJ.x.y"}, "", DEFAULT_LOCATIONS, True, ("jwt", "eyJ.x.y")),
    ({"authorization": "bearer eyJ.x.y"}, "", DEFAULT_LOCATIONS, False, ("jwt", "eyJ.x.y")),
    ({"authorization": f"Bearer {KEY}"}, "", DEFAULT_LOCATIONS, True, ("apikey", KEY)),
    ({"x-api-key": KEY}, "", DEFAULT_LOCATIONS, True, ("apikey", KEY)),
    ({"x-api-key": KEY}, "", DEFAULT_LOCATIONS, False, None),  # keys off: not a credential
    ({}, "access_token=eyJ.a.b&x=1", DEFAULT_LOCATIONS, True, ("jwt", "eyJ.a.b")),
    ({}, "x=1", DEFAULT_LOCATIONS, True, None),
    ({"authorization": "Basic dXNlcg=="}, "", DEFAULT_LOCATIONS, True, None),
    ({"x-jwt": "eyJ.h.h"}, "", (Location("header", "x-jwt"),), True, ("jwt", "eyJ.h.h")),
    ({"cookie": "a=1; session=eyJ.c.c"}, "", (Location("cookie", "session"),), True, ("jwt", "eyJ.c.c")),
]


@pytest.mark.parametrize(("headers", "query", "locations", "keys", "expected"), CRED_CASES)
def test_find_credential(
    headers: dict[str, str],
    query: str,
    locations: tuple[Location, ...],
    keys: bool,
    expected: tuple[str, str] | None,
) -> None:
    found = find_credential(headers, query, locations, keys)
    assert (None if found is None else (found.kind, found.value)) == expected


def test_api_keys_are_looked_up_by_hash_and_refused_when_revoked_or_expired() -> None:
    good, old, gone = new_key(), new_key(), new_key()
    table = ApiKeyTable(
        [
            (hash_key(good), ApiKeyEntry("s/good", "apikeys/good", None, False)),
            (hash_key(old), ApiKeyEntry("s/old", "apikeys/old", 100.0, False)),
            (hash_key(gone), ApiKeyEntry("s/gone", "apikeys/gone", None, True)),
        ]
    )
    assert table.authenticate(good, 1000.0)[0] is not None
    assert table.authenticate(old, 1000.0) == (None, "API key s/old expired")
    assert table.authenticate(gone, 1.0) == (None, "API key s/gone is revoked")
    assert table.authenticate(new_key(), 1.0) == (None, "unknown API key")
    assert len({new_key() for _ in range(50)}) == 50 and all(k.startswith("mwk_") for k in [good])


CLAIMS = {
    "iss": "https://idp",
    "sub": "u1",
    "groups": ["ops", "ml"],
    "org": {"tier": "gold", "n": 3},
    "ok": True,
}


@pytest.mark.parametrize(
    ("path", "values"),
    [
        (("groups",), ["ops", "ml"]),
        (("org", "tier"), ["gold"]),
        (("org", "n"), ["3"]),
        (("ok",), ["true"]),
        (("org", "missing"), []),
        (("groups", "x"), []),
    ],
)
def test_claim_values(path: tuple[str, ...], values: list[str]) -> None:
    assert claim_value(CLAIMS, path) == values


POLICY = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: partners, namespace: edge}
spec:
  action: ALLOW
  rules:
  - from: [{source: {requestPrincipals: ["https://idp/*"], notRequestPrincipals: ["https://idp/banned"]}}]
    to: [{operation: {paths: ["/v1/chat/completions"]}}]
    when:
    - {key: "request.auth.claims[groups]", values: ["ml"]}
    - {key: "request.auth.claims[org][tier]", values: ["gold", "platinum"]}
    - {key: request.auth.audiences, values: ["partner-api"]}
    - {key: request.auth.presenter, notValues: ["evil-app"]}
"""


def _decide(user: EndUser | None, path: str = "/v1/chat/completions") -> bool:
    resources = load_text(POLICY)
    info = WorkloadInfo("public", "edge", "public", "public", {})
    engine = compile_engine(resources, info, trust_domain="demo.local")
    attrs = RequestAttributes(method="POST", path=path, **end_user_attributes(user))
    return engine.evaluate(attrs).allowed


def _user(**changes: object) -> EndUser:
    claims = {**CLAIMS, "aud": ["partner-api"], **changes}
    return EndUser(
        f"{claims['iss']}/{claims['sub']}",
        "jwt",
        tuple(claims["aud"]),  # type: ignore[arg-type]
        claims.get("azp"),  # type: ignore[arg-type]
        claims,
    )


@pytest.mark.parametrize(
    ("user", "path", "allowed"),
    [
        (_user(), "/v1/chat/completions", True),
        (_user(), "/v1/embeddings", False),
        (None, "/v1/chat/completions", False),  # no token: unauthenticated, the ALLOW does not match
        (_user(sub="banned"), "/v1/chat/completions", False),
        (_user(groups=["ops"]), "/v1/chat/completions", False),
        (_user(org={"tier": "silver"}), "/v1/chat/completions", False),
        (_user(aud=["other"]), "/v1/chat/completions", False),
        (_user(azp="evil-app"), "/v1/chat/completions", False),
        (_user(azp="good-app"), "/v1/chat/completions", True),
        (_user(iss="https://other"), "/v1/chat/completions", False),
    ],
)
def test_policies_on_end_users(user: EndUser | None, path: str, allowed: bool) -> None:
    assert _decide(user, path) is allowed


def test_unknown_auth_keys_are_refused_at_load() -> None:
    bad = POLICY.replace("request.auth.presenter", "request.auth.unknown")
    with pytest.raises(LoadError, match=r"request\.auth\.unknown"):
        load_text(bad)


@pytest.mark.parametrize(
    ("key", "user", "expected"),
    [
        ("request.auth.principal", _user(), "https://idp/u1"),
        ("request.auth.principal", None, "-"),
        ("request.auth.claims[org][tier]", _user(), "gold"),
        ("request.auth.claims[groups]", _user(), "ops,ml"),
    ],
)
def test_rate_limits_key_on_the_end_user(key: str, user: EndUser | None, expected: str) -> None:
    spec = RateLimit.model_validate(
        yaml.safe_load(f"{{name: l, key: '{key}', requests: {{limit: 1, per: second}}}}")
    )
    limit = compile_limit("edge/p", "local", spec, "demo.local")
    facts = RequestFacts(
        None,
        None,
        "POST",
        "/",
        {},
        None,
        "chat",
        end_user=user.principal if user else None,
        claims=user.claims if user else {},
    )
    assert limit.key_of(facts) == expected


def test_no_spelling_of_the_end_user_header_reaches_an_app_from_outside() -> None:
    from meshward.http.hygiene import clean_request_headers

    raw = [(b"x_meshward_end_user", b"apikeys/admin"), (b"X_Meshward_End_User", b"x"), (b"accept", b"*/*")]
    assert clean_request_headers(raw, None) == {"accept": "*/*"}
