"""``EventThrottle``: one event per subject per interval, counting the occurrences in between."""

from __future__ import annotations

from portcullis.audit.throttle import EventThrottle
from portcullis.testing import ManualClock


def test_the_first_occurrence_of_each_subject_is_an_event_and_the_rest_of_the_minute_are_counted() -> None:
    clock = ManualClock()
    throttle = EventThrottle(clock, every_s=60.0)
    assert [throttle.admit("a") for _ in range(4)] == [0, None, None, None]
    assert throttle.admit("b") == 0  # another subject is not held back by the first
    clock.advance(59.9)
    assert throttle.admit("a") is None
    clock.advance(0.1)
    assert throttle.admit("a") == 4  # the event after the interval tells how many went without one
    assert throttle.admit("a") is None


def test_past_its_bound_the_table_starts_over_and_at_worst_writes_an_extra_event() -> None:
    throttle = EventThrottle(ManualClock(), max_tracked=3)
    assert [throttle.admit(n) for n in ("a", "b", "c")] == [0, 0, 0]
    assert throttle.admit("a") is None  # tracked: counted
    assert throttle.admit("d") == 0  # the fourth subject empties the table
    assert throttle.admit("a") == 0  # forgotten: an event again, its count lost
    assert len(throttle._last) == 2
