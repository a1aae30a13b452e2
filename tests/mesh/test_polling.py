"""The one bounded wait (:func:`meshward.mesh.polling.wait_until`): answers, deadlines, stops."""

from __future__ import annotations

import itertools
import json
import threading
import time

import pytest

from meshward.mesh.errors import MeshError
from meshward.mesh.polling import wait_until


def test_returns_the_first_truthy_value() -> None:
    calls = itertools.count()
    assert wait_until(lambda: next(calls) >= 3 and "ready", 5.0, "it", interval=0.001) == "ready"


def test_times_out_naming_what_it_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(MeshError, match=r"^timed out after 0s waiting for the control plane$"):
        wait_until(lambda: None, 0.1, "the control plane", interval=0.01)
    assert 0.1 <= time.monotonic() - started < 2.0


def test_a_stop_ends_the_wait() -> None:
    stop = threading.Event()
    threading.Timer(0.05, stop.set).start()
    with pytest.raises(MeshError, match=r"^stopped$"):
        wait_until(lambda: False, 30.0, "never", stop, interval=0.01)


@pytest.mark.parametrize(
    ("tolerate", "outcome"),
    [((), ValueError), ((ValueError,), "half-written then whole"), ((OSError,), ValueError)],
)
def test_only_tolerated_errors_mean_not_yet(tolerate: tuple[type[Exception], ...], outcome: object) -> None:
    documents = iter(['{"half', '"half-written then whole"'])

    def read() -> str:
        value: str = json.loads(next(documents))
        return value

    if isinstance(outcome, str):
        assert wait_until(read, 5.0, "the file", interval=0.001, tolerate=tolerate) == outcome
    else:
        with pytest.raises(ValueError):
            wait_until(read, 5.0, "the file", interval=0.001, tolerate=tolerate)
