"""Adaptive retry: beyond a streak of failures at an endpoint, a retry is a 1/failures draw."""

from __future__ import annotations

import random

import pytest

from portcullis.egress.retry import FailureStreak, RetryConfig, adaptive_retry_allowed


@pytest.mark.parametrize("failures", [0, 1, 4, 5])
def test_up_to_five_failures_in_a_row_every_retry_goes_and_no_chance_is_drawn(failures: int) -> None:
    rng = random.Random(3)
    before = rng.getstate()
    assert adaptive_retry_allowed(failures, 5, rng)
    assert rng.getstate() == before  # a healthy endpoint's jitter sequence is left alone


@pytest.mark.parametrize("failures", [6, 10, 50])
def test_beyond_five_failures_retries_go_with_probability_one_over_failures(failures: int) -> None:
    rng = random.Random(45)
    draws = 20_000
    allowed = sum(adaptive_retry_allowed(failures, 5, rng) for _ in range(draws))
    expected = draws / failures
    # binomial: within five standard deviations of draws * p
    sigma = (draws * (1 / failures) * (1 - 1 / failures)) ** 0.5
    assert abs(allowed - expected) < 5 * sigma


def test_the_draw_is_one_uniform_number_against_one_over_failures() -> None:
    reference = random.Random(11)
    expected = [reference.random() < 1 / 8 for _ in range(12)]
    rng = random.Random(11)
    assert [adaptive_retry_allowed(8, 5, rng) for _ in range(12)] == expected
    assert any(expected) and not all(expected)  # the seed shows both answers


def test_a_success_ends_the_streak_and_retries_go_again() -> None:
    streak = FailureStreak(5)
    for _ in range(20):
        streak.record(failed=True)
    rng = random.Random(45)
    assert sum(streak.allows_retry(rng) for _ in range(1000)) < 100  # about 1/20
    streak.record(failed=False)
    assert streak.failures == 0
    assert all(streak.allows_retry(rng) for _ in range(1000))


def test_the_streak_counts_failures_in_a_row_only() -> None:
    streak = FailureStreak(5)
    for failed in (True, True, False, True, True, True):
        streak.record(failed=failed)
    assert streak.failures == 3


def test_adaptive_retry_can_be_switched_off() -> None:
    streak = FailureStreak(None)
    for _ in range(100):
        streak.record(failed=True)
    assert all(streak.allows_retry(random.Random(1)) for _ in range(100))


def test_a_negative_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match="adaptive_after"):
        RetryConfig(adaptive_after=-1)
