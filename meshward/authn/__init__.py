"""End-user authentication: JWTs (RequestAuthentication, Istio's semantics) and API keys.

- :mod:`meshward.authn.tokens`  pure: where a request carries a credential, and what kind it is.
- :mod:`meshward.authn.jwt`     pure: verify one JWT against trusted issuers and their key sets.
- :mod:`meshward.authn.jwks`    the key sets: inline, or fetched from ``jwksUri`` and cached.
- :mod:`meshward.authn.apikeys` API keys: minted once, stored as SHA-256, looked up per request.

The filter that applies them in a sidecar or a gateway is :mod:`meshward.filters.authn`.
"""
