"""``meshward check`` and the sidecar prepare a request with the same code: same bytes in, same
attributes out.

The sidecar's path: the bytes a client writes, fed to the strict parser, prepared by
:func:`prepare_request` (what :mod:`meshward.proxy.inbound` calls), turned into policy
attributes by the authorization filter's :func:`attributes_of`. The check's path: the call as
``meshward check`` receives it (method, target, ``--header`` pairs) through
:func:`meshward.mesh.check.call_context`. Hypothesis generates the requests, repeated fields,
cookies, mesh-owned and underscore spellings, encoded slashes and dot segments included.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.authz.attributes import RequestAttributes
from meshward.filters.authz import attributes_of
from meshward.filters.base import Peer
from meshward.http.errors import RemoteProtocolError
from meshward.http.events import RequestHead
from meshward.http.parser import RequestParser
from meshward.identity.spiffe import SpiffeId
from meshward.mesh.check import call_context, decide_call
from meshward.proxy.prepare import prepare_request
from meshward.resources.loader import load_text

CALLER = SpiffeId("td.local", "web", "webapp")
NOW = 1_800_000_000.0

_METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "get", "BR EW"])
_SEGMENT = st.sampled_from(
    ["v1", "chat", "completions", "v2", "models", "fraud", "infer", ".", "..", "", "%2F", "%41", "a b"]
)
_TARGET = st.builds(
    lambda segments, query: "/" + "/".join(segments) + query,
    st.lists(_SEGMENT, max_size=5),
    st.sampled_from(["", "?x=1", "?a=b&c=%2F"]),
)
_NAME = st.sampled_from(
    [
        "cookie",
        "Cookie",
        "x-tenant",
        "X-Tenant",
        "x_tenant",
        "accept",
        "content-type",
        "authorization",
        "x-forwarded-client-cert",
        "X_Forwarded_Client_Cert",
        "x-forwarded-for",
        "connection",
        "x-request-id",
        "traceparent",
    ]
)
_VALUE = st.text(alphabet="ab=;, -/.x1\t", max_size=8)
_HEADERS = st.lists(st.tuples(_NAME, _VALUE), max_size=6)
_SLASHES = st.sampled_from(["reject", "decode"])


def sidecar_attributes(raw: bytes, slashes: Any, port: int) -> RequestAttributes:
    """What the serving sidecar's policies read for these bytes."""
    (head,) = [e for e in RequestParser().feed(raw) if isinstance(e, RequestHead)]
    peer = Peer("127.0.0.1", 40000, CALLER.uri, CALLER.namespace, CALLER.service_account)
    ctx = prepare_request(head, slashes, request_id="r", peer=peer, destination_port=port, start=0.0)
    return attributes_of(ctx, NOW)


def check_attributes(
    method: str, target: str, host: str, headers: list[tuple[str, str]], slashes: Any, port: int
) -> RequestAttributes:
    """What ``meshward check`` decides on for the same call."""
    ctx = call_context(method, target, host, headers, slashes, CALLER, "127.0.0.1", port)
    return attributes_of(ctx, NOW)


def client_bytes(method: str, target: str, host: str, headers: list[tuple[str, str]]) -> bytes:
    """The head an HTTP/1.1 client writes (Host first, each field on its own line)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *(f"{n}: {v}" for n, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _outcome(fn: Any, *args: Any) -> dict[str, Any] | str:
    try:
        return asdict(fn(*args))
    except RemoteProtocolError as exc:
        return f"{exc.status}: {exc}"


@settings(max_examples=300, deadline=None)
@given(_METHODS, _TARGET, _HEADERS, _SLASHES)
def test_same_bytes_in_same_attributes_out(
    method: str, target: str, headers: list[tuple[str, str]], slashes: str
) -> None:
    host = "chat.llm"
    sidecar = _outcome(sidecar_attributes, client_bytes(method, target, host, headers), slashes, 8000)
    check = _outcome(check_attributes, method, target, host, headers, slashes, 8000)
    assert check == sidecar


@pytest.mark.parametrize(
    ("headers", "name", "expected"),
    [
        # RFC 6265 §5.4: one Cookie field, pairs separated by "; " (what Envoy joins to as well)
        ([("cookie", "a=1"), ("Cookie", "b=2")], "cookie", "a=1; b=2"),
        ([("x-tenant", "a"), ("X-Tenant", "b")], "x-tenant", "a, b"),
        (
            [("x-forwarded-client-cert", "By=spiffe://td.local/ns/x/sa/admin")],
            "x-forwarded-client-cert",
            None,
        ),
        ([("x_forwarded_for", "10.0.0.1")], "x_forwarded_for", None),
        ([("connection", "x-secret"), ("x-secret", "1")], "x-secret", None),
    ],
)
def test_check_sees_the_fields_the_sidecar_sees(
    headers: list[tuple[str, str]], name: str, expected: str | None
) -> None:
    attrs = check_attributes("GET", "/", "chat.llm", headers, "reject", 80)
    assert attrs.headers.get(name) == expected
    assert attrs == sidecar_attributes(client_bytes("GET", "/", "chat.llm", headers), "reject", 80)


MESH = """
apiVersion: meshward.dev/v1alpha1
kind: Mesh
metadata: {name: mesh}
spec: {trustDomain: td.local}
---
apiVersion: meshward.dev/v1alpha1
kind: Workload
metadata: {name: chat, namespace: llm, labels: {app: chat}}
spec: {service: chat, port: 8000, command: ["true"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: session, namespace: llm}
spec:
  selector: {matchLabels: {app: chat}}
  rules:
  - when: [{key: "request.headers[cookie]", values: ["a=1; b=2"]}]
"""


def test_decide_call_joins_repeated_cookies_as_the_sidecar_does() -> None:
    resources = load_text(MESH)
    cookies = [("cookie", "a=1"), ("cookie", "b=2")]
    report, results = decide_call(resources, None, "web/webapp", "chat.llm", "GET", "/x", cookies)
    assert report["decision"] == "allow", report
    assert [d.allowed for _, d in results] == [True]
    report, _ = decide_call(resources, None, "web/webapp", "chat.llm", "GET", "/x", [("cookie", "a=1, b=2")])
    assert report["decision"] == "deny"
