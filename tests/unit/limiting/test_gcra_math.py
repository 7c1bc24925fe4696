"""GCRA arithmetic (``limiting/gcra.py``): a burst of ``capacity``, then the steady rate, exact waits.

Pure functions, so ``now`` is a plain number; times are chosen on a grid the floats represent well.
"""

from __future__ import annotations

import pytest

from portcullis.limiting.gcra import gcra_check, gcra_remaining

# "10/second": one unit comes back every 0.1 s, a full bucket holds 10
EMISSION = 0.1
TOLERANCE = 1.0


def _burst(now: float, tat: float, count: int, cost: int = 1) -> tuple[int, float]:
    admitted = 0
    for _ in range(count):
        ok, tat, _wait = gcra_check(tat, now, EMISSION, TOLERANCE, cost)
        admitted += ok
    return admitted, tat


def test_a_full_bucket_admits_exactly_its_capacity_at_once() -> None:
    admitted, _ = _burst(1000.0, 1000.0, 25)
    assert admitted == 10


def test_after_the_burst_one_unit_comes_back_per_emission_interval() -> None:
    now = 1000.0
    _, tat = _burst(now, now, 10)
    for step in range(1, 6):
        at = now + step * EMISSION
        ok, tat, _ = gcra_check(tat, at, EMISSION, TOLERANCE, 1)
        assert ok, f"steady request {step} refused"
        refused, _, _ = gcra_check(tat, at, EMISSION, TOLERANCE, 1)
        assert not refused, f"a second request in slot {step} was admitted"


@pytest.mark.parametrize(
    ("used", "cost", "expected_wait"),
    [
        (10, 1, 0.1),  # empty bucket: one emission interval
        (10, 3, 0.3),  # three units need three intervals
        (8, 3, 0.1),  # two units left, the third comes back after one interval
        (5, 10, 0.5),  # a full-capacity request waits until the bucket is full
    ],
    ids=["empty-cost-1", "empty-cost-3", "partial-cost-3", "half-cost-capacity"],
)
def test_retry_after_is_the_exact_time_until_the_request_fits(used: int, cost: int, expected_wait: float) -> None:
    now = 1000.0
    _, tat = _burst(now, now, used)
    ok, _, wait = gcra_check(tat, now, EMISSION, TOLERANCE, cost)
    assert not ok
    assert wait == pytest.approx(expected_wait)
    later_ok, _, _ = gcra_check(tat, now + wait, EMISSION, TOLERANCE, cost)
    assert later_ok
    too_early, _, _ = gcra_check(tat, now + wait - EMISSION / 2, EMISSION, TOLERANCE, cost)
    assert not too_early


def test_a_cost_greater_than_one_spends_that_many_units() -> None:
    now = 1000.0
    admitted, tat = _burst(now, now, 5, cost=3)
    assert admitted == 3  # 9 of 10 units spent; a fourth request of 3 does not fit
    assert gcra_remaining(tat, now, EMISSION, TOLERANCE)[0] == 1
    ok, _, _ = gcra_check(tat, now, EMISSION, TOLERANCE, 1)
    assert ok


def test_a_refused_request_leaves_the_state_unchanged() -> None:
    now = 1000.0
    _, tat = _burst(now, now, 10)
    ok, new_tat, wait = gcra_check(tat, now, EMISSION, TOLERANCE, 4)
    assert not ok
    assert new_tat == tat
    assert wait > 0
    assert gcra_remaining(new_tat, now, EMISSION, TOLERANCE) == gcra_remaining(tat, now, EMISSION, TOLERANCE)


def test_remaining_and_reset_track_spending_and_recovery() -> None:
    now = 1000.0
    assert gcra_remaining(now, now, EMISSION, TOLERANCE) == (10, 0.0)
    _, tat = _burst(now, now, 4)
    remaining, reset = gcra_remaining(tat, now, EMISSION, TOLERANCE)
    assert remaining == 6
    assert reset == pytest.approx(0.4)
    assert gcra_remaining(tat, now + 0.2, EMISSION, TOLERANCE)[0] == 8
    assert gcra_remaining(tat, now + 5.0, EMISSION, TOLERANCE) == (10, 0.0)
