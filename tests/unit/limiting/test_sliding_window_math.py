"""Sliding-window counter arithmetic (``limiting/sliding_window.py``): fixed buckets, weighted previous.

Pure function; the state (bucket, current, previous) is threaded through by hand as a store would.
A 100 s window with a limit of 10 keeps the fractions readable.
"""

from __future__ import annotations

import pytest

from portcullis.limiting.sliding_window import sliding_check

WINDOW = 100.0
LIMIT = 10


class Counter:
    """Threads the returned state into the next call, as the store does."""

    def __init__(self) -> None:
        self.bucket, self.current, self.previous = -2, 0, 0

    def hit(self, now: float, cost: int = 1, *, commit: bool = True) -> tuple[bool, float, int]:
        ok, bucket, current, previous, retry, remaining = sliding_check(
            self.bucket, self.current, self.previous, now, WINDOW, LIMIT, cost
        )
        if ok and commit:
            self.bucket, self.current, self.previous = bucket, current, previous
        return ok, retry, remaining


def test_the_limit_holds_within_one_fixed_bucket() -> None:
    counter = Counter()
    results = [counter.hit(1000.0 + i)[0] for i in range(15)]  # all inside bucket [1000, 1100)
    assert results == [True] * 10 + [False] * 5


def test_remaining_counts_down_within_the_bucket() -> None:
    counter = Counter()
    assert [counter.hit(1000.0)[2] for _ in range(3)] == [9, 8, 7]


def test_the_previous_bucket_is_weighted_by_its_overlap() -> None:
    counter = Counter()
    for _ in range(10):
        assert counter.hit(1000.0)[0]
    # 25 s into the next bucket, 75 % of the previous one still counts: 7.5, so two more fit
    at = 1125.0
    assert [counter.hit(at)[0] for _ in range(3)] == [True, True, False]


def test_a_bucket_two_windows_old_no_longer_counts() -> None:
    counter = Counter()
    for _ in range(10):
        counter.hit(1000.0)
    assert [counter.hit(1200.0)[0] for _ in range(11)] == [True] * 10 + [False]


def test_rolling_over_moves_current_into_previous() -> None:
    counter = Counter()
    for _ in range(4):
        counter.hit(1050.0)
    ok, _, remaining = counter.hit(1100.0)  # start of the next bucket: all 4 still weigh fully
    assert ok
    assert remaining == 10 - 4 - 1
    assert (counter.bucket, counter.current, counter.previous) == (11, 1, 4)


@pytest.mark.parametrize(
    ("spends", "ask_at", "cost"),
    [
        ([(1000.0, 10)], 1050.0, 1),  # full bucket: wait for the next one
        ([(1000.0, 10)], 1125.0, 3),  # weighted previous: wait within this bucket
        ([(1090.0, 6), (1110.0, 3)], 1130.0, 3),  # previous plus current: wait within this bucket
        ([(1000.0, 7)], 1090.0, 4),  # current alone too full: next bucket, then partly decayed
        ([(1000.0, 10)], 1103.3, 1),  # a time off the grid
        ([(1000.0, 3)], 1099.9, 10),  # a full-limit request
        ([(1000.0, 9), (1110.0, 1)], 1111.7, 2),  # previous and current, off the grid
    ],
    ids=[
        "next-bucket", "weighted-previous", "previous-and-current", "next-bucket-decayed", "off-grid", "full-cost",
        "mixed-off-grid",
    ],
)
def test_retry_after_is_positive_and_enough(spends: list[tuple[float, int]], ask_at: float, cost: int) -> None:
    counter = Counter()
    for at, count in spends:
        for _ in range(count):
            assert counter.hit(at)[0]
    ok, retry, _ = counter.hit(ask_at, cost, commit=False)
    assert not ok
    assert retry > 0
    assert counter.hit(ask_at + retry, cost)[0], f"still refused after waiting {retry} s"


def test_a_request_larger_than_the_limit_is_never_admitted() -> None:
    counter = Counter()
    ok, retry, _ = counter.hit(1000.0, LIMIT + 1)
    assert not ok
    assert retry > 0
