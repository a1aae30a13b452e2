"""The ingress gateway with end-user authentication, as outside callers use it (real processes).

One mesh (``meshward up``): an echo model behind its sidecar, a ``Gateway`` routing ``/v1/`` to
it, a ``RequestAuthentication`` trusting a local identity provider whose JWKS a real HTTP server
in this test serves, policies on the end users, a per-user token budget, and API keys made with
``meshward apikey``. Callers are httpx and the ``openai`` SDK, from outside the mesh.
"""

from __future__ import annotations

import json
import ssl
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.authn.keys import Idp, make_idp, server_cert
from tests.authn.test_jwt import _hs256_with_public_key, unsigned
from tests.mesh.meshctl import Mesh
from tests.support.proc import wait_for

pytestmark = pytest.mark.e2e

ISSUER = "https://idp.example"


class Jwks:
    """A real JWKS endpoint on loopback; ``document`` can change (key rotation)."""

    def __init__(self, document: str) -> None:
        self.document = document
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = outer.document.encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def mesh_file(jwks_url: str, cert: Path, key: Path) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: meshward.dev/v1alpha1
        kind: Mesh
        metadata: {{name: edge-test}}
        spec: {{trustDomain: demo.local}}
        ---
        apiVersion: meshward.dev/v1alpha1
        kind: Workload
        metadata: {{name: echo, namespace: llm, labels: {{app: echo}}}}
        spec:
          command: ["python", "-m", "tests.authn.echo_app", "--port", "{{port}}"]
          readiness: {{httpGet: /health}}
        ---
        apiVersion: meshward.dev/v1alpha1
        kind: Gateway
        metadata: {{name: public, namespace: edge, labels: {{app: public-gateway}}}}
        spec:
          routes:
          - match: {{pathPrefix: /v1/}}
            to: {{service: echo.llm}}
        ---
        apiVersion: meshward.dev/v1alpha1
        kind: Gateway
        metadata: {{name: public-tls, namespace: edge, labels: {{app: public-gateway}}}}
        spec:
          tls: {{certFile: "{cert}", keyFile: "{key}"}}
          routes:
          - match: {{path: /v1/chat/completions, methods: [POST]}}
            to: {{service: echo.llm}}
        ---
        apiVersion: security.istio.io/v1
        kind: RequestAuthentication
        metadata: {{name: partners, namespace: edge}}
        spec:
          selector: {{matchLabels: {{app: public-gateway}}}}
          jwtRules:
          - issuer: "{ISSUER}"
            audiences: [partner-api]
            jwksUri: "{jwks_url}"
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {{name: partners-chat-only, namespace: edge}}
        spec:
          selector: {{matchLabels: {{app: public-gateway}}}}
          action: ALLOW
          rules:
          - from: [{{source: {{requestPrincipals: ["{ISSUER}/*", "apikeys/partner-a"]}}}}]
            to: [{{operation: {{methods: [POST], paths: ["/v1/chat/completions"]}}}}]
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {{name: bronze-is-out, namespace: edge}}
        spec:
          selector: {{matchLabels: {{app: public-gateway}}}}
          action: DENY
          rules:
          - when: [{{key: "request.auth.claims[plan][tier]", values: [bronze]}}]
        ---
        apiVersion: meshward.dev/v1alpha1
        kind: RateLimitPolicy
        metadata: {{name: per-partner-tokens, namespace: edge}}
        spec:
          selector: {{matchLabels: {{app: public-gateway}}}}
          limits:
          - name: tokens-per-user
            key: request.auth.principal
            match: {{aiOperations: [chat]}}
            tokens: {{limit: 6, per: hour}}
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {{name: gateway-users-only, namespace: llm}}
        spec:
          selector: {{matchLabels: {{app: echo}}}}
          action: ALLOW
          rules:
          - from: [{{source: {{principals: ["edge/public", "edge/public-tls"], requestPrincipals: ["*"]}}}}]
        """
    )


class Edge:
    def __init__(self, mesh: Mesh, url: str, idp: Idp, jwks: Jwks) -> None:
        self.mesh, self.url, self.idp, self.jwks = mesh, url, idp, jwks
        self.http = httpx.Client(base_url=url, timeout=20, trust_env=False)
        self.tls_url = ""
        self.cert = Path()

    def chat(
        self, headers: dict[str, str] | None = None, path: str = "/v1/chat/completions"
    ) -> httpx.Response:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        return self.http.post(path, json=body, headers=headers or {})

    def bearer(self, **claims: Any) -> dict[str, str]:
        return {"authorization": f"Bearer {self.idp.token(aud='partner-api', **claims)}"}


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    root = tmp_path_factory.mktemp("edge")
    idp = make_idp(ISSUER, "ES256", "k1")
    jwks = Jwks(idp.jwks())
    cert, key, _ = server_cert(root)
    (root / "mesh.yaml").write_text(mesh_file(jwks.url, cert, key))
    try:
        with Mesh(root / "state").detached(root / "mesh.yaml") as mesh:
            doc = json.loads(mesh.cli("status", "--json").stdout)
            gw, tls_gw = sorted(doc["gateways"], key=lambda g: str(g["name"]))
            assert gw["name"] == "public" and gw["namespace"] == "edge"
            assert gw["identity"] == "spiffe://demo.local/ns/edge/sa/public" and gw["address"]
            assert tls_gw["url"].startswith("https://")
            e = Edge(mesh, f"http://{gw['address']}", idp, jwks)
            e.tls_url, e.cert = tls_gw["url"], cert
            yield e
            e.http.close()
    finally:
        jwks.close()


def test_a_valid_token_reaches_the_model_as_its_end_user(edge: Edge) -> None:
    r = edge.chat(edge.bearer(sub="alice"))
    assert r.status_code == 200, r.text
    seen = r.json()["headers"]
    assert seen["x-meshward-end-user"] == f"{ISSUER}/alice"
    assert "authorization" not in seen  # the token is not forwarded (forwardOriginalToken: false)
    assert seen["x-forwarded-client-cert"].endswith("URI=spiffe://demo.local/ns/edge/sa/public")


def test_invalid_tokens_are_refused_401(edge: Edge) -> None:
    idp = edge.idp
    other = make_idp("https://evil.example", "ES256", "k1")
    now = int(time.time())
    tokens = {
        "expired": idp.token(aud="partner-api", exp=now - 3600),
        "wrong issuer": other.token(aud="partner-api"),
        "wrong audience": idp.token(aud="someone-else"),
        "bad signature": other.token(iss=ISSUER, aud="partner-api"),
        "alg none": unsigned({"iss": ISSUER, "sub": "x", "aud": "partner-api"}),
        "key confusion": _hs256_with_public_key(idp),
    }
    for name, token in tokens.items():
        r = edge.chat({"authorization": f"Bearer {token}"})
        assert r.status_code == 401, (name, r.status_code, r.text)
        assert r.headers["www-authenticate"].startswith('Bearer error="invalid_token"'), name


def test_no_token_passes_authentication_and_authorization_refuses(edge: Edge) -> None:
    assert edge.chat().status_code == 403


def test_a_partner_gets_only_the_endpoint_it_was_granted(edge: Edge) -> None:
    headers = edge.bearer(sub="carol")
    assert edge.chat(headers).status_code == 200
    assert edge.chat(headers, path="/v1/embeddings").status_code == 403
    assert edge.http.get("/v1/models", headers=headers).status_code == 403
    assert edge.http.get("/other", headers=headers).status_code == 404  # no route
    assert edge.chat(edge.bearer(sub="dan", plan={"tier": "bronze"})).status_code == 403  # nested claim
    # The refusal is audited as the end user, next to the gateway's workload identity.
    wait_for(
        lambda: f"{ISSUER}/carol" in edge.mesh.cli("audit", "tail", "-n", "200", "--format", "ocsf").stdout,
        timeout=20,
        what="the denial of carol in the audit trail",
    )
    log = edge.mesh.state / "gateways" / "edge.public" / "access.log"
    assert f'"end_user":"{ISSUER}/carol"' in log.read_text()


def test_the_end_user_header_cannot_be_forged_from_outside(edge: Edge) -> None:
    r = edge.chat({**edge.bearer(sub="erin"), "x-meshward-end-user": "apikeys/admin"})
    assert r.json()["headers"]["x-meshward-end-user"] == f"{ISSUER}/erin"


def test_token_budget_per_end_user(edge: Edge) -> None:
    frank, grace = edge.bearer(sub="frank"), edge.bearer(sub="grace")
    codes = [edge.chat(frank).status_code for _ in range(4)]
    assert codes[:2] == [200, 200] and 429 in codes[2:], codes  # 3 tokens a call, 6 per hour
    assert edge.chat(grace).status_code == 200  # another partner's budget is untouched


def test_api_key_with_the_openai_sdk_then_revoked(edge: Edge) -> None:
    created = json.loads(edge.mesh.cli("apikey", "create", "--name", "partner-a", "--json").stdout)
    assert created["principal"] == "apikeys/partner-a" and created["key"].startswith("mwk_")
    listed = edge.mesh.cli("apikey", "list", "--json").stdout
    assert created["key"] not in listed and "partner-a" in listed
    client = openai.OpenAI(base_url=f"{edge.url}/v1", api_key=created["key"], max_retries=0)

    def works() -> bool:
        try:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
            return True
        except openai.AuthenticationError:
            return False  # the generation with the key has not reached the gateway yet

    wait_for(works, timeout=20, what="the new API key to be accepted")
    edge.mesh.cli("apikey", "revoke", "partner-a")

    def refused() -> bool:
        try:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
            return False
        except openai.AuthenticationError as exc:
            return "revoked" in exc.response.text

    wait_for(refused, timeout=20, what="the revoked API key to be refused")


def test_key_rotation_at_the_identity_provider(edge: Edge) -> None:
    new = make_idp(ISSUER, "ES256", "k2")
    edge.jwks.document = edge.idp.jwks(new)  # the provider publishes its next key
    token = new.token(aud="partner-api", sub="heidi")
    # An unseen kid makes the gateway refetch the key set (at most once per 5 s per provider).
    r = wait_for(lambda: (r := edge.chat({"authorization": f"Bearer {token}"})).status_code == 200 and r, 20)
    assert r.json()["headers"]["x-meshward-end-user"] == f"{ISSUER}/heidi"


def test_check_answers_for_end_users(edge: Edge, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(edge.idp.token(aud="partner-api", sub="ivan"))
    args = [
        "check",
        "--from",
        "web/x",
        "--to",
        "public.edge",
        "--method",
        "POST",
        "--path",
        "/v1/chat/completions",
    ]
    assert edge.mesh.cli(*args, "--jwt", str(token), check=False).returncode == 0
    assert edge.mesh.cli(*args, check=False).returncode == 1
    token.write_text(edge.idp.token(aud="other", sub="ivan"))
    done = edge.mesh.cli(*args, "--jwt", str(token), check=False)
    assert done.returncode == 1 and "401" in done.stdout
    bronze = '{"iss": "https://idp.example", "sub": "z", "plan": {"tier": "bronze"}}'
    assert edge.mesh.cli(*args, "--claims", bronze, check=False).returncode == 1


def test_https_gateway_with_its_own_certificate(edge: Edge) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    trust = ssl.create_default_context(cafile=str(edge.cert))
    with httpx.Client(verify=trust, timeout=20, trust_env=False) as client:
        r = client.post(f"{edge.tls_url}/v1/chat/completions", json=body, headers=edge.bearer(sub="judy"))
        assert r.status_code == 200, r.text
        assert r.json()["headers"]["x-meshward-end-user"] == f"{ISSUER}/judy"
        assert client.get(f"{edge.tls_url}/v1/chat/completions", headers=edge.bearer()).status_code == 404
    plain = edge.tls_url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):  # no plaintext on the TLS gateway
        httpx.post(f"{plain}/v1/chat/completions", json=body, timeout=5, trust_env=False)
