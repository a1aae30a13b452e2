"""Time windows for ``when: [{key: request.time, values: [...]}]``.

Syntax (one window per value)::

    [DAYS ]HH:MM-HH:MM[ ZONE]

- ``DAYS``: ``Mon``..``Sun``, ranges ``Mon-Fri`` (also wrapping, ``Fri-Mon``), lists
  ``Mon,Wed,Fri-Sun``, or ``*``/omitted for every day.
- ``HH:MM-HH:MM``: start inclusive, end exclusive; ``24:00`` is the end of the day. A window
  whose end is not after its start runs across midnight: ``Fri 22:00-02:00`` is Friday 22:00
  to Saturday 02:00 (the days name the day a window *starts*).
- ``ZONE``: ``UTC`` (default), ``Z``, a fixed offset ``+02:00`` / ``-0530``, or an IANA name
  such as ``Europe/Berlin`` (daylight saving applied at evaluation time).

Parsed once at load time into minute-of-week intervals; :meth:`TimeWindow.contains` is a few
integer operations for UTC and fixed offsets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["InvalidTimeWindow", "TimeWindow", "parse_time_window"]

_DAY_NAMES: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_INDEX: Final = {name: i for i, name in enumerate(_DAY_NAMES)}
_MINUTES_PER_DAY: Final = 1440
_MINUTES_PER_WEEK: Final = 7 * _MINUTES_PER_DAY
_WINDOW: Final = re.compile(
    r"^\s*(?:(?P<days>[A-Za-z*][A-Za-z,\-*]*)\s+)?"
    r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})"
    r"(?:\s+(?P<zone>\S+))?\s*$"
)
_OFFSET: Final = re.compile(r"^([+-])(\d{2}):?(\d{2})$")


class InvalidTimeWindow(ValueError):
    """A ``request.time`` value in a policy is not a valid window (the policy author's fault)."""


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Minute-of-week intervals ``[start, end)`` (Monday 00:00 = 0) in one time zone."""

    text: str
    intervals: tuple[tuple[int, int], ...]
    offset_seconds: int  # fixed offset from UTC (0 for UTC) when ``zone`` is None
    zone: ZoneInfo | None = None

    def contains(self, epoch_seconds: float) -> bool:
        """Is the instant (seconds since the Unix epoch, UTC) inside the window?"""
        if self.zone is None:
            local = int(epoch_seconds) + self.offset_seconds
        else:
            offset = datetime.fromtimestamp(epoch_seconds, self.zone).utcoffset()
            local = int(epoch_seconds) + (int(offset.total_seconds()) if offset is not None else 0)
        days, seconds = divmod(local, 86400)
        # 1970-01-01 was a Thursday (index 3 with Monday = 0).
        minute = ((days + 3) % 7) * _MINUTES_PER_DAY + seconds // 60
        for start, end in self.intervals:  # noqa: SIM110 (hot path: a loop beats any())
            if start <= minute < end:
                return True
        return False


def parse_time_window(text: str) -> TimeWindow:
    """Parse one window; raises :class:`InvalidTimeWindow` with what is wrong."""
    m = _WINDOW.match(text)
    if m is None:
        raise InvalidTimeWindow(
            f"invalid time window {text!r} (expected e.g. 'Mon-Fri 01:00-05:00 UTC' or '22:00-02:00')"
        )
    days = _parse_days(m.group("days"), text)
    start = _parse_clock(m.group("start"), text)
    end = _parse_clock(m.group("end"), text)
    if start >= _MINUTES_PER_DAY:
        raise InvalidTimeWindow(f"time window {text!r} starts at 24:00; use 00:00 of the next day")
    length = end - start if end > start else end + _MINUTES_PER_DAY - start
    intervals: list[tuple[int, int]] = []
    for day in sorted(days):
        lo = day * _MINUTES_PER_DAY + start
        hi = lo + length
        if hi <= _MINUTES_PER_WEEK:
            intervals.append((lo, hi))
        else:  # Sunday night into Monday morning wraps around the week
            intervals.append((lo, _MINUTES_PER_WEEK))
            intervals.append((0, hi - _MINUTES_PER_WEEK))
    offset, zone = _parse_zone(m.group("zone"), text)
    return TimeWindow(text=text, intervals=tuple(intervals), offset_seconds=offset, zone=zone)


def _parse_days(spec: str | None, text: str) -> set[int]:
    if spec is None or spec == "*":
        return set(range(7))
    days: set[int] = set()
    for part in spec.split(","):
        bounds = part.split("-")
        if len(bounds) > 2 or not all(b.lower() in _DAY_INDEX for b in bounds):
            raise InvalidTimeWindow(
                f"invalid days {part!r} in time window {text!r} (use Mon..Sun, e.g. Mon-Fri)"
            )
        first = _DAY_INDEX[bounds[0].lower()]
        last = _DAY_INDEX[bounds[-1].lower()]
        day = first
        while True:
            days.add(day)
            if day == last:
                break
            day = (day + 1) % 7
    return days


def _parse_clock(clock: str, text: str) -> int:
    hours, minutes = (int(x) for x in clock.split(":"))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes != 0):
        raise InvalidTimeWindow(f"invalid time of day {clock!r} in time window {text!r}")
    return hours * 60 + minutes


def _parse_zone(zone: str | None, text: str) -> tuple[int, ZoneInfo | None]:
    if zone is None or zone.upper() in ("UTC", "Z", "GMT"):
        return 0, None
    m = _OFFSET.match(zone)
    if m is not None:
        hours, minutes = int(m.group(2)), int(m.group(3))
        if hours > 14 or minutes > 59:
            raise InvalidTimeWindow(f"invalid UTC offset {zone!r} in time window {text!r}")
        sign = -1 if m.group(1) == "-" else 1
        return sign * (hours * 3600 + minutes * 60), None
    try:
        return 0, ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidTimeWindow(f"unknown time zone {zone!r} in time window {text!r}") from exc
