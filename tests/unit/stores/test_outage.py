"""The shared-state outage tracker: when the next attempt may go to Redis, on a manual clock."""

from __future__ import annotations

from portcullis.stores.failover import Outage
from portcullis.testing import ManualClock


def test_the_backoff_doubles_per_failed_attempt_up_to_its_cap_and_clears_on_success() -> None:
    clock = ManualClock()
    outage = Outage(clock, max_backoff_s=4.0)
    waits = []
    for _ in range(5):
        outage.failed(ConnectionError())
        started = clock.monotonic()
        while not outage.should_try():
            clock.advance(0.25)
        waits.append(clock.monotonic() - started)
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0]
    outage.recovered()
    assert outage.should_try() and not outage.degraded


def test_many_callers_failing_on_one_attempt_count_once() -> None:
    clock = ManualClock()
    outage = Outage(clock)
    for _ in range(50):  # a pipelined batch of 50 decisions fails all 50 callers at once
        outage.failed(ConnectionError())
    clock.advance(0.5)
    assert outage.should_try()  # retried after the first backoff, not after 30 s
