"""The tap's pure parts: the sidecar hub's bounded per-subscriber queue, the watcher filter."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshward.dashboard.tap import TapFilter, TapWatcher, format_event
from meshward.telemetry.taphub import TapHub, TapSubscriber, sse_event

EVENT = {
    "time": 1_765_000_000.0,
    "source": "spiffe://demo.local/ns/web/sa/webapp",
    "mtls": True,
    "destination_service": "tiny-model.ml",
    "workload": "ml/tiny-model",
    "method": "GET",
    "path": "/admin",
    "model": None,
    "operation": "other",
    "status": 403,
    "decision": "deny",
    "policy": "ml/no-admin",
    "tokens": {"input": 0, "output": 0},
    "dlp": [],
    "duration_ms": 0.4,
}


@pytest.mark.parametrize(
    ("tap_filter", "matches"),
    [
        (TapFilter(), True),
        (TapFilter(source="web/webapp", trust_domain="demo.local"), True),
        (TapFilter(source="demo.local/ns/web/sa/webapp"), True),
        (TapFilter(source="spiffe://demo.local/ns/web/sa/webapp"), True),
        (TapFilter(source="jobs/batch", trust_domain="demo.local"), False),
        (TapFilter(source="webapp"), True),  # a fragment of the URI
        (TapFilter(destination="tiny-model"), True),
        (TapFilter(destination="tiny-model.ml"), True),
        (TapFilter(destination="ml/tiny-model"), True),
        (TapFilter(destination="tiny"), False),
        (TapFilter(status="403"), True),
        (TapFilter(status="4xx"), True),
        (TapFilter(status="5xx"), False),
        (TapFilter(status="200"), False),
        (TapFilter(decision="deny"), True),
        (TapFilter(decision="allow"), False),
        (TapFilter(source="web/webapp", destination="tiny-model", status="4xx", decision="deny"), True),
        (TapFilter(source="web/webapp", destination="tiny-model", status="4xx", decision="allow"), False),
    ],
)
def test_tap_filter(tap_filter: TapFilter, matches: bool) -> None:
    assert tap_filter.matches(EVENT) is matches


def test_a_subscriber_that_cannot_write_keeps_only_the_newest_events() -> None:
    written: list[bytes] = []
    subscriber = TapSubscriber(written.append, limit=3)
    hub = TapHub()
    assert not hub.subscribers  # idle: the telemetry filter skips the tap entirely
    hub.subscribe(subscriber)
    hub.publish({"n": 0})
    subscriber.pause()  # the socket's buffer is full
    for n in range(1, 8):
        hub.publish({"n": n})
    assert [json.loads(w[6:]) for w in written] == [{"n": 0}]
    assert subscriber.dropped == 4 and len(subscriber.queue) == 3
    subscriber.resume()
    assert [json.loads(w[6:])["n"] for w in written] == [0, 5, 6, 7]
    hub.unsubscribe(subscriber)
    hub.publish({"n": 8})
    assert not hub.subscribers and len(written) == 4


def test_resume_stops_when_the_socket_pauses_again() -> None:
    subscriber: TapSubscriber
    written: list[bytes] = []

    def write(data: bytes) -> None:
        written.append(data)
        if len(written) == 2:
            subscriber.pause()

    subscriber = TapSubscriber(write, limit=10)
    subscriber.pause()
    for n in range(5):
        subscriber.offer(sse_event({"n": n}))
    subscriber.resume()
    assert len(written) == 2 and len(subscriber.queue) == 3 and subscriber.paused


@given(st.integers(1, 50), st.lists(st.integers(0, 10_000), max_size=200))
def test_watcher_queue_is_bounded_and_keeps_the_newest(limit: int, values: list[int]) -> None:
    watcher = TapWatcher(TapFilter(), limit=limit)
    for v in values:
        watcher.offer({"n": v})
    kept = [e["n"] for e in watcher.take(0)]
    assert kept == values[-limit:]
    assert watcher.dropped == max(0, len(values) - limit)


def test_format_event_is_one_line_of_metadata() -> None:
    line = format_event(EVENT)
    assert "\n" not in line
    for part in (
        "src=spiffe://demo.local/ns/web/sa/webapp",
        "dst=tiny-model.ml",
        ":status=403",
        "policy=ml/no-admin",
    ):
        assert part in line
