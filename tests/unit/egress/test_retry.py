"""Egress retries: which requests may be retried, the spread of the waits, and the budget's bound."""

from __future__ import annotations

import random
import statistics

import pytest

from portcullis.egress.retry import (
    RetryBudget,
    RetryConfig,
    backoff_s,
    may_retry_request,
    parse_retry_after,
    retry_delay_s,
)
from portcullis.testing import ManualClock

NOW = 1_700_000_000.0


@pytest.mark.parametrize(("method", "headers", "expected"), [
    ("GET", [], True), ("head", [], True), ("PUT", [], True), ("DELETE", [], True), ("OPTIONS", [], True),
    ("POST", [], False), ("PATCH", [], False),
    ("POST", [(b"idempotency-key", b"order-42")], True), ("POST", [(b"idempotency-key", b"")], False),
    # Of two, the last decides, as it did when the headers were read into a dict.
    ("POST", [(b"idempotency-key", b""), (b"idempotency-key", b"order-42")], True),
    ("POST", [(b"idempotency-key", b"order-42"), (b"idempotency-key", b"")], False),
])
def test_only_idempotent_requests_are_retried(method: str, headers: list[tuple[bytes, bytes]], expected: bool) -> None:
    assert may_retry_request(method, headers) is expected


def test_full_jitter_spreads_waits_over_the_whole_range_and_respects_the_cap() -> None:
    cfg = RetryConfig(base_s=0.1, cap_s=2.0)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (5, 1.6), (6, 2.0), (20, 2.0)]:
        waits = [backoff_s(attempt, cfg, rng) for _ in range(2000)]
        assert all(0 <= w <= ceiling for w in waits)
        # uniform over [0, ceiling]: mean near half, and both ends of the range are used
        assert statistics.mean(waits) == pytest.approx(ceiling / 2, rel=0.08)
        assert min(waits) < ceiling * 0.05 and max(waits) > ceiling * 0.95


def test_retry_after_is_believed_up_to_its_cap() -> None:
    cfg = RetryConfig(retry_after_cap_s=30)
    rng = random.Random(1)
    assert retry_delay_s(1, "2", cfg, rng, NOW) == 2.0
    assert retry_delay_s(1, "3600", cfg, rng, NOW) is None  # fail now rather than wait an hour
    date = "Tue, 14 Nov 2023 22:13:30 GMT"  # NOW + 10 s
    assert retry_delay_s(1, date, cfg, rng, NOW) == pytest.approx(10.0)
    assert 0 <= (retry_delay_s(1, None, cfg, rng, NOW) or 0) <= cfg.base_s


@pytest.mark.parametrize("value", ["", "soon", "-5", "1.5", "Tue, 14 Nov 2023 22:13:30"])
def test_a_malformed_retry_after_falls_back_to_backoff(value: str) -> None:
    assert parse_retry_after(value, NOW) is None


def test_a_total_outage_gets_at_most_ratio_more_calls_than_requests() -> None:
    # 1,000 requests over 100 s to an endpoint that fails every call; each would retry twice.
    cfg = RetryConfig(max_attempts=3, budget_ratio=0.2, budget_window_s=10, budget_min_per_s=0.5)
    clock = ManualClock()
    budget = RetryBudget(cfg, clock)
    sent = 0
    for _ in range(1000):
        budget.request()
        sent += 1
        for _ in range(cfg.max_attempts - 1):
            if not budget.try_retry():
                break
            sent += 1
        clock.advance(0.1)
    floor = cfg.budget_min_per_s * cfg.budget_window_s * (100 / cfg.budget_window_s)
    assert sent <= 1000 * (1 + cfg.budget_ratio) + floor
    assert sent > 1000  # and retries were not switched off altogether


def test_a_quiet_endpoint_can_still_retry_and_the_budget_refills() -> None:
    cfg = RetryConfig(budget_ratio=0.2, budget_window_s=10, budget_min_per_s=0.2)  # floor: 2 per window
    clock = ManualClock()
    budget = RetryBudget(cfg, clock)
    budget.request()
    assert budget.try_retry() and budget.try_retry()
    assert not budget.try_retry()
    clock.advance(10.1)
    assert budget.try_retry()


@pytest.mark.parametrize("bad", [{"max_attempts": 0}, {"base_s": 0}, {"cap_s": 0.01}, {"budget_ratio": 2},
                                 {"budget_window_s": 0}])
def test_nonsense_configs_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="need"):
        RetryConfig(**bad)  # type: ignore[arg-type]
