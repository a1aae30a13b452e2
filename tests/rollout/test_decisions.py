"""Pure rollout decisions: weights, sticky callers, rules, mirror sampling, balancing, ejection."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.resources.modelroute import WEIGHT_ANNOTATION, ModelRoute
from meshward.rollout.balancer import Balancer, OutlierPolicy
from meshward.rollout.compare import answers_differ
from meshward.rollout.rewrite import rewrite_body_model, rewrite_path_model
from meshward.rollout.selection import CompiledRoute, bucket_of, sequence_bucket

TD = "demo.local"


def route(weight: int = 0, **spec: Any) -> CompiledRoute:
    return CompiledRoute(ModelRoute.model_validate(route_doc(weight, **spec)), TD)


def route_doc(weight: int = 0, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "meshward.dev/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "chat", "namespace": "llm", "annotations": {WEIGHT_ANNOTATION: str(weight)}},
        "spec": {
            "service": "chat",
            "subsets": {"stable": {"version": "v1"}, "canary": {"version": "v2"}},
            "rollout": {"steps": [10, 50, 100], "interval": "1s"},
            **spec,
        },
    }


def no_header(name: str) -> str | None:
    return None


@pytest.mark.parametrize("weight", [0, 10, 25, 50, 90, 100])
def test_weights_hold_over_2000_callers(weight: int) -> None:
    r = route(weight)
    callers = [f"{TD}/ns/app/sa/caller-{i}" for i in range(2000)]
    canary = sum(r.decide(c, no_header, None, i).subset == "canary" for i, c in enumerate(callers))
    assert abs(canary / 2000 * 100 - weight) <= 3


@pytest.mark.parametrize("weight", [10, 33, 50])
def test_non_sticky_requests_follow_weights_in_any_window(weight: int) -> None:
    r = route(weight, stickyBy="none")
    picks = [r.decide("", no_header, None, n).subset for n in range(1, 2001)]
    for start in (0, 500, 1500):
        window = picks[start : start + 500]
        assert abs(window.count("canary") / 5 - weight) <= 1.5


@given(st.text(min_size=1, max_size=40), st.integers(0, 99), st.integers(0, 100))
@settings(max_examples=80, deadline=None)
def test_sticky_caller_stays_on_canary_as_it_grows(caller: str, w1: int, extra: int) -> None:
    w2 = min(100, w1 + extra)
    first = route(w1).decide(caller, no_header, None, 0).subset
    second = route(w2).decide(caller, no_header, None, 0).subset
    assert route(w1).decide(caller, no_header, None, 99).subset == first  # sticky: counter ignored
    if first == "canary":
        assert second == "canary"


@given(st.integers(0, 10**9))
def test_buckets_in_range(n: int) -> None:
    assert 0 <= sequence_bucket(n) < 10_000
    assert 0 <= bucket_of(str(n)) < 10_000


def test_rules_match_in_order_on_principal_header_and_model() -> None:
    r = route(
        0,
        rules=[
            {"match": {"principals": ["qa/tester"]}, "route": [{"subset": "canary", "weight": 100}]},
            {"match": {"headers": {"X-Canary": "yes"}}, "route": [{"subset": "canary"}]},
            {"match": {"models": ["fraud-next"]}, "route": [{"subset": "canary"}]},
        ],
        aliases={"fraud": {"canary": "fraud-v2"}},
    )
    headers = {"x-canary": "yes"}
    cases = [
        (f"{TD}/ns/qa/sa/tester", no_header, None, "canary", 0),
        (f"{TD}/ns/web/sa/app", headers.get, None, "canary", 1),
        (f"{TD}/ns/web/sa/app", no_header, "fraud-next", "canary", 2),
        (f"{TD}/ns/web/sa/app", no_header, "fraud", "stable", -1),
    ]
    for principal, header, model, subset, rule in cases:
        d = r.decide(principal, header, model, 0)
        assert (d.subset, d.rule) == (subset, rule), (principal, model)
    assert r.decide(f"{TD}/ns/qa/sa/tester", no_header, "fraud", 0).model == "fraud-v2"
    assert r.decide(f"{TD}/ns/web/sa/app", no_header, "fraud", 0).model is None  # stable: no alias


@pytest.mark.parametrize("percent", [10, 25, 100])
def test_mirror_takes_exactly_its_share(percent: int) -> None:
    r = route(0, mirror={"subset": "canary", "percent": percent})
    mirrored = sum(r.decide(f"c{i}", no_header, None, i).mirror == "canary" for i in range(1000))
    assert mirrored == percent * 10


def test_round_robin_when_idle_least_request_when_busy() -> None:
    b = Balancer()
    keys = ("a:1", "b:1", "c:1")
    picks = [keys[b.pick(keys, 0.0)] for _ in range(6)]
    assert picks == ["a:1", "b:1", "c:1", "a:1", "b:1", "c:1"]
    b.started("a:1")
    b.started("b:1")
    assert keys[b.pick(keys, 0.0)] == "c:1"
    b.started("c:1")
    b.started("c:1")
    b.finished("a:1", True, 0.0)
    assert keys[b.pick(keys, 0.0)] == "a:1"


def test_ejection_back_off_and_return() -> None:
    b = Balancer(OutlierPolicy(consecutive=3, base_ejection=5.0))
    keys = ("bad:1", "good:1")
    assert not b.outcome("bad:1", False, 0.0)
    assert not b.outcome("bad:1", False, 0.0)
    assert b.outcome("bad:1", False, 1.0)  # third in a row: ejected for 5 s
    assert all(keys[b.pick(keys, 2.0)] == "good:1" for _ in range(10))
    assert b.ejected(2.0) == ["bad:1"]
    assert b.ejected(6.1) == []  # back after the back-off
    for _ in range(3):
        b.outcome("bad:1", False, 7.0)
    assert b.health["bad:1"].ejected_until == pytest.approx(17.0)  # second ejection: 10 s
    assert b.pick(keys, 8.0, exclude=frozenset({"good:1"})) == -1  # tried the only healthy one


def test_all_ejected_panics_to_use_them() -> None:
    b = Balancer(OutlierPolicy(consecutive=1))
    keys = ("a:1", "b:1")
    b.outcome("a:1", False, 0.0)
    b.outcome("b:1", False, 0.0)
    assert b.pick(keys, 1.0) in (0, 1)


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.booleans()), max_size=60))
def test_never_picks_ejected_while_a_healthy_one_exists(outcomes: list[tuple[str, bool]]) -> None:
    b = Balancer(OutlierPolicy(consecutive=2))
    keys = ("a", "b", "c")
    for key, ok in outcomes:
        b.outcome(key, ok, 0.0)
    i = b.pick(keys, 0.5)
    ejected = set(b.ejected(0.5))
    if len(ejected) < 3:
        assert keys[i] not in ejected


@pytest.mark.parametrize(
    ("a", "b", "differ"),
    [
        (
            (200, b'{"id": "1", "outputs": [{"data": [0.5]}]}'),
            (200, b'{"id": "2", "outputs": [{"data": [0.5]}]}'),
            False,
        ),
        ((200, b'{"outputs": [{"data": [0.5]}]}'), (200, b'{"outputs": [{"data": [0.9]}]}'), True),
        ((200, b'{"outputs": [{"data": [0.5]}]}'), (200, b'{"outputs": [{"data": [0.50001]}]}'), False),
        ((200, b"ok"), (500, b"ok"), True),
        ((200, b"plain"), (200, b"other"), True),
        (
            (200, b'{"choices": [{"message": {"content": "hi"}}], "created": 1}'),
            (200, b'{"choices": [{"message": {"content": "hi"}}], "created": 2}'),
            False,
        ),
    ],
)
def test_answers_differ(a: tuple[int, bytes], b: tuple[int, bytes], differ: bool) -> None:
    assert answers_differ(*a, *b) is differ


def test_model_rewrites() -> None:
    assert rewrite_path_model("/v2/models/fraud/infer", "fraud", "fraud-v2") == "/v2/models/fraud-v2/infer"
    assert rewrite_path_model("/v2/models/other/infer", "fraud", "fraud-v2") is None
    assert (
        rewrite_body_model(b'{"model": "chat", "messages": []}', "chat-v2")
        == b'{"model":"chat-v2","messages":[]}'
    )
    assert rewrite_body_model(b"not json", "x") is None


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"rules": [{"route": [{"subset": "nope"}]}]}, "subset 'nope'"),
        ({"rules": [{"route": [{"subset": "canary", "weight": 50}]}]}, "add up to 100"),
        ({"rollout": {"steps": [50, 10]}}, "increasing"),
        ({"rollout": {"steps": [10], "checks": [{"metric": "bogus", "max": 1}]}}, "unknown metric"),
        ({"rollout": {"steps": [10], "checks": [{"metric": "alerts"}]}}, "exactly one"),
        ({"stickyBy": "cookie"}, "stickyBy"),
    ],
)
def test_invalid_routes_refused(spec: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        route(0, **spec)


def test_no_panic_lets_the_caller_fall_back() -> None:
    b = Balancer(OutlierPolicy(consecutive=1))
    b.outcome("a:1", False, 0.0)
    assert b.pick(("a:1",), 1.0, panic=False) == -1
    assert b.pick(("a:1",), 1.0) == 0


@pytest.mark.parametrize(
    ("weight", "rules", "serving"),
    [
        (0, [], {"stable"}),  # not started, or rolled back: the canary serves nothing
        (20, [], {"stable", "canary"}),
        (100, [], {"canary"}),
        (
            0,
            [{"match": {"headers": {"X-Canary": "yes"}}, "route": [{"subset": "canary"}]}],
            {"stable", "canary"},
        ),
    ],
)
def test_serving_subsets_are_those_with_weight(weight: int, rules: list[Any], serving: set[str]) -> None:
    assert route(weight, rules=rules).serving == serving


def test_a_rolled_back_canary_is_no_failover_target() -> None:
    from meshward.config.snapshot import ServiceEntry
    from meshward.rollout.plan import EndpointState, service_plans
    from tests.support.sidecar import make_snapshot

    v1, v2 = "127.0.0.1:1001", "127.0.0.1:1002"
    labels = {v1: {"version": "v1"}, v2: {"version": "v2"}}
    entry = ServiceEntry("chat", "llm", (v1, v2), ("spiffe://demo.local/ns/llm/sa/chat",), labels)
    for weight, failover in ((20, (v1, v2)), (0, (v1,))):
        doc = route_doc(weight, rollout={"steps": [20, 50, 100], "interval": "1s"})
        snapshot = make_snapshot("web/caller", services=[entry], policies=[doc])
        plan = service_plans(snapshot, EndpointState())["chat.llm"]
        assert plan.failover == failover, weight
