"""Value matching (through the compiled engine) and time windows, table by table."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshward.authz.attributes import RequestAttributes
from meshward.authz.engine import AuthzEngine
from meshward.patterns.ipblocks import ip_to_int
from meshward.patterns.principals import normalize_principal_pattern
from meshward.patterns.timewindow import InvalidTimeWindow, parse_time_window
from meshward.resources.authorization import AuthorizationPolicy


def _matches(operation: dict[str, list[str]], source: dict[str, list[str]], **request: Any) -> bool:
    """Does a one-rule ALLOW policy match? (The compiled code path, as the sidecar runs it.)"""
    rule: dict[str, Any] = {}
    if operation:
        rule["to"] = [{"operation": operation}]
    if source:
        rule["from"] = [{"source": source}]
    policy = AuthorizationPolicy.model_validate(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "p"},
            "spec": {"rules": [rule]},
        }
    )
    attrs = RequestAttributes(**{"method": "GET", "path": "/", **request})
    return AuthzEngine([policy], trust_domain="td.local").evaluate(attrs).allowed


@pytest.mark.parametrize(
    ("patterns", "value", "expected"),
    [
        (["abc"], "abc", True),
        (["abc"], "abcd", False),
        (["abc*"], "abc", True),
        (["abc*"], "abcd", True),
        (["abc*"], "xabc", False),
        (["*abc"], "xabc", True),
        (["*abc"], "abcx", False),
        (["*"], "x", True),
        (["*"], "", False),
        (["*"], None, False),
        (["abc", "x*"], None, False),
        (["a", "b*", "*c"], "bz", True),
        (["a", "b*", "*c"], "zc", True),
        (["a", "b*", "*c"], "zz", False),
    ],
)
def test_strings(patterns: list[str], value: str | None, expected: bool) -> None:
    assert _matches({"models": patterns}, {}, model=value) is expected
    assert _matches({"notModels": patterns}, {}, model=value) is not expected  # absent satisfies not*


def test_hosts_are_case_insensitive() -> None:
    assert _matches({"hosts": ["Fraud.ML", "*.EXAMPLE"]}, {}, host="fraud.ml")
    assert _matches({"hosts": ["*.EXAMPLE"]}, {}, host="A.Example")
    assert not _matches({"notHosts": ["*.EXAMPLE"]}, {}, host="a.example")


@pytest.mark.parametrize(
    ("patterns", "path", "expected"),
    [
        (["/v2/models/{*}/infer"], "/v2/models/fraud/infer", True),
        (["/v2/models/{*}/infer"], "/v2/models//infer", False),
        (["/v2/models/{*}/infer"], "/v2/models/a/b/infer", False),
        (["/v2/{**}"], "/v2/models/a/b/infer", True),
        (["/v2/{**}"], "/v2/", True),
        (["/v2/{**}"], "/v3/x", False),
        (["/files/{*}.json"], "/files/a.json", True),
        (["/files/{*}.json"], "/files/a/b.json", False),
        (["/a.b/{*}"], "/aXb/c", False),  # literals are literal, not regex
        (["/exact", "/v2/{**}"], "/exact", True),
        (["/pre*", "/v2/models/{*}"], "/prefix", True),
        (["/pre*", "/v2/models/{*}"], "/v2/models/x", True),
        (["/pre*", "/v2/models/{*}"], "/v2/models/x/y", False),
    ],
)
def test_paths(patterns: list[str], path: str, expected: bool) -> None:
    assert _matches({"paths": patterns}, {}, path=path) is expected
    assert _matches({"notPaths": patterns}, {}, path=path) is not expected


@pytest.mark.parametrize(
    ("blocks", "ip", "expected"),
    [
        (["10.0.0.0/8"], "10.255.0.1", True),
        (["10.0.0.0/8"], "11.0.0.1", False),
        (["192.0.2.7"], "192.0.2.7", True),
        (["192.0.2.7"], "192.0.2.8", False),
        (["10.0.0.0/8"], "::ffff:10.0.0.1", True),
        (["fd00::/8"], "fd12::1", True),
        (["fd00::/8"], "10.0.0.1", False),
        (["0.0.0.0/0"], "fd12::1", False),
        (["::/0"], "10.0.0.1", False),
        (["10.0.0.0/8", "192.0.2.0/24"], "192.0.2.200", True),
        (["10.0.0.0/8"], "not-an-ip", False),
        (["10.0.0.0/8"], "010.0.0.1", False),
    ],
)
def test_ip_blocks(blocks: list[str], ip: str, expected: bool) -> None:
    assert _matches({}, {"ipBlocks": blocks}, source_ip=ip) is expected
    assert _matches({}, {"remoteIpBlocks": blocks}, source_ip="127.0.0.1", remote_ip=ip) is expected


def test_ip_to_int() -> None:
    assert ip_to_int("10.0.0.1") == ip_to_int("::ffff:10.0.0.1") == 0x0A000001
    assert ip_to_int("::1") == (1 << 32) + 1
    for bad in ("010.0.0.1", "1.2.3", "", "x", "1.2.3.4\x00"):
        assert ip_to_int(bad) is None


@pytest.mark.parametrize(
    ("pattern", "normalized"),
    [
        ("*", "*"),
        ("ml/fraud", "td.local/ns/ml/sa/fraud"),
        ("ml/*", "td.local/ns/ml/sa/*"),
        ("*/fraud", "*/sa/fraud"),
        ("spiffe://other/ns/ml/sa/fraud", "other/ns/ml/sa/fraud"),
        ("other/ns/ml/sa/fraud", "other/ns/ml/sa/fraud"),
        ("*/sa/fraud", "*/sa/fraud"),
    ],
)
def test_principal_patterns(pattern: str, normalized: str) -> None:
    assert normalize_principal_pattern(pattern, "td.local") == normalized


def _at(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


# 2026-11-30 is a Monday.
@pytest.mark.parametrize(
    ("window", "instant", "inside"),
    [
        ("Mon-Fri 01:00-05:00 UTC", "2026-12-02T01:00:00+00:00", True),
        ("Mon-Fri 01:00-05:00 UTC", "2026-12-02T04:59:59+00:00", True),
        ("Mon-Fri 01:00-05:00 UTC", "2026-12-02T05:00:00+00:00", False),
        ("Mon-Fri 01:00-05:00 UTC", "2026-12-02T00:59:00+00:00", False),
        ("Mon-Fri 01:00-05:00 UTC", "2026-12-05T03:00:00+00:00", False),
        ("01:00-05:00", "2026-12-06T03:00:00+00:00", True),
        ("* 01:00-05:00 Z", "2026-12-06T03:00:00+00:00", True),
        ("Fri 22:00-02:00", "2026-12-04T23:00:00+00:00", True),
        ("Fri 22:00-02:00", "2026-12-05T01:59:00+00:00", True),
        ("Fri 22:00-02:00", "2026-12-05T02:00:00+00:00", False),
        ("Fri 22:00-02:00", "2026-12-04T01:00:00+00:00", False),  # Thursday night is not in it
        ("Sun 23:00-01:00", "2026-11-30T00:30:00+00:00", True),  # wraps into Monday
        ("Sat,Sun 00:00-24:00", "2026-12-06T23:59:00+00:00", True),
        ("Sat,Sun 00:00-24:00", "2026-11-30T00:00:00+00:00", False),
        ("Fri-Mon 12:00-13:00", "2026-11-30T12:30:00+00:00", True),
        ("Fri-Mon 12:00-13:00", "2026-12-01T12:30:00+00:00", False),
        ("Mon,Wed-Thu 12:00-13:00", "2026-12-03T12:30:00+00:00", True),
        ("Mon-Fri 09:00-17:00 +02:00", "2026-12-02T07:00:00+00:00", True),
        ("Mon-Fri 09:00-17:00 +02:00", "2026-12-02T15:00:00+00:00", False),
        ("Mon-Fri 09:00-17:00 -0530", "2026-12-02T14:29:00+00:00", False),
        ("Mon-Fri 09:00-17:00 -0530", "2026-12-02T14:30:00+00:00", True),
        ("Mon 09:00-10:00 Europe/Berlin", "2026-11-30T08:30:00+00:00", True),  # CET = UTC+1
        ("Mon 09:00-10:00 Europe/Berlin", "2026-06-01T07:30:00+00:00", True),  # CEST = UTC+2
        ("Mon 09:00-10:00 Europe/Berlin", "2026-06-01T08:30:00+00:00", False),
        ("mon-fri 01:00-05:00 utc", "2026-12-02T03:00:00+00:00", True),
        ("01:00-01:00", "2026-12-02T13:00:00+00:00", True),  # equal ends: the whole day
    ],
)
def test_time_windows(window: str, instant: str, inside: bool) -> None:
    assert parse_time_window(window).contains(_at(instant)) is inside


@pytest.mark.parametrize(
    "window",
    [
        "",
        "Mon-Fri",
        "1:00-5:00pm",
        "Mon-Fri 01:00",
        "Mon-Fri-Sat 01:00-02:00",
        "24:00-01:00",
        "01:60-02:00",
        "01:00-02:00 +15:00",
        "01:00-02:00 Nowhere/City",
    ],
)
def test_invalid_time_windows(window: str) -> None:
    with pytest.raises(InvalidTimeWindow):
        parse_time_window(window)


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 1439),
    length=st.integers(1, 1440),
    epoch=st.integers(0, 4_000_000_000),
)
def test_every_day_window_matches_clock_arithmetic(start: int, length: int, epoch: int) -> None:
    """Against a straightforward reference: minutes since local midnight, modulo a day."""
    end = (start + length) % 1440
    window = parse_time_window(f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}")
    minute = (epoch // 60) % 1440
    expected = (minute - start) % 1440 < (length if length < 1440 else 1440) if end != start else True
    assert window.contains(float(epoch)) is expected
