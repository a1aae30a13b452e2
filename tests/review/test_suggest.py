"""The least-privilege generator: path templates (table) and the proof with the authz engine
(property): the suggested policy, loaded as ``meshward apply`` loads it, allows every observed
call and denies every call whose caller, method, path template, model or operation was never
seen together."""

from __future__ import annotations

import re

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.authz.engine import AuthzEngine
from meshward.resources.authorization import AuthorizationPolicy
from meshward.resources.loader import load_text
from meshward.review.data import ObservedRequest
from meshward.review.evaluate import attributes
from meshward.review.suggest import path_template, suggest_policy

TD = "demo.local"


@pytest.mark.parametrize(
    ("path", "model", "template"),
    [
        ("/v2/models/fraud/infer", "fraud", "/v2/models/{*}/infer"),
        ("/v2/models/fraud/infer", None, "/v2/models/fraud/infer"),
        ("/v2/models/fraud/versions/3/infer", "fraud", "/v2/models/{*}/versions/{*}/infer"),
        ("/v1/chat/completions", "gpt-4o", "/v1/chat/completions"),
        ("/orders/123/items/550e8400-e29b-41d4-a716-446655440000", None, "/orders/{*}/items/{*}"),
        ("/blobs/deadbeef42", None, "/blobs/{*}"),
        ("/blobs/readme", None, "/blobs/readme"),
        ("/a*b/x", None, "/{*}/x"),
        ("/a{b}/x", None, "/{*}/x"),
        ("/", None, "/"),
        ("/v1/models/", None, "/v1/models/"),
    ],
)
def test_path_template(path: str, model: str | None, template: str) -> None:
    assert path_template(path, model) == template


CALLERS = [
    "spiffe://demo.local/ns/ml/sa/a",
    "spiffe://demo.local/ns/ml/sa/b",
    "spiffe://demo.local/ns/web/sa/c",
    None,
]
PATHS = [
    "/v2/models/m/infer",
    "/v2/models/n/infer",
    "/v2/models/m",
    "/orders/17",
    "/orders/42",
    "/v1/chat/completions",
    "/x*",
]
METHODS = ["GET", "POST"]
MODELS = ["m", "n", None]
OPERATIONS = ["infer", "chat", "metadata"]

observed = st.builds(
    lambda caller, method, path, model, op: ObservedRequest(
        0, "spiffe://demo.local/ns/ml/sa/svc", caller, method, path, model=model, operation=op
    ),
    st.sampled_from(CALLERS),
    st.sampled_from(METHODS),
    st.sampled_from(PATHS),
    st.sampled_from(MODELS),
    st.sampled_from(OPERATIONS),
)


def _regex(template: str) -> re.Pattern[str]:
    return re.compile("[^/]+".join(re.escape(part) for part in template.split("{*}")))


def _reference(seen: list[ObservedRequest], probe: ObservedRequest) -> bool:
    """Allowed iff some caller's (method, path template) group admits the probe's path, and
    the probe's model (when every request of the group had one) and operation were seen in it."""
    if probe.source is None:
        return False
    groups: dict[tuple[str, str], list[ObservedRequest]] = {}
    for o in seen:
        if o.source == probe.source and o.method == probe.method:
            groups.setdefault((o.method, path_template(o.path, o.model)), []).append(o)
    for (_, template), members in groups.items():
        models = {o.model for o in members}
        model_ok = None in models or probe.model in models
        if (
            _regex(template).fullmatch(probe.path)
            and model_ok
            and probe.operation in {o.operation for o in members}
        ):
            return True
    return False


def _engine(seen: list[ObservedRequest]) -> AuthzEngine:
    doc = suggest_policy(seen, name="svc-least-privilege", namespace="ml", match_labels={"app": "svc"})
    (policy,) = load_text(yaml.safe_dump(doc), "<suggestion>")  # what `meshward apply` does
    assert isinstance(policy, AuthorizationPolicy)
    return AuthzEngine([policy], trust_domain=TD)


@settings(max_examples=40, deadline=None)
@given(st.lists(observed, max_size=10), st.lists(observed, max_size=10))
def test_the_suggestion_allows_what_was_seen_and_nothing_else(
    seen: list[ObservedRequest], probes: list[ObservedRequest]
) -> None:
    engine = _engine(seen)
    for o in seen:
        assert engine.evaluate(attributes(o)).allowed is (o.source is not None), o
    for p in probes:
        assert engine.evaluate(attributes(p)).allowed is _reference(seen, p), (seen, p)


def test_no_traffic_gives_allow_nothing() -> None:
    doc = suggest_policy([], name="x", namespace="ml", match_labels={"app": "x"}, dry_run=True)
    assert doc["spec"]["rules"] == [] and doc["metadata"]["annotations"] == {"meshward.dev/dry-run": "true"}
