"""MultiLimiter over the memory store: every window and rule at once, all-or-nothing, peek and refund.

Real ``MemoryCounterStore``; time is a ``ManualClock``. Spending is observed the way a client sees it:
through later admissions and the decision's quota, never through the store's internals.
"""

from __future__ import annotations

import pytest

from portcullis.config.types import parse_rate
from portcullis.limiting.headers import ratelimit_headers, retry_after_value
from portcullis.limiting.limiter import MultiLimiter
from portcullis.limiting.rules import LimitDecision, LimitRule
from portcullis.stores.memory import MemoryCounterStore
from portcullis.testing import ManualClock


def _rule(name: str, *rates: str, burst: int | None = None) -> LimitRule:
    return LimitRule(name=name, windows=[parse_rate(r) for r in rates], burst=burst)


@pytest.fixture
def manual_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def limiter(manual_clock: ManualClock) -> MultiLimiter:
    return MultiLimiter(MemoryCounterStore(), manual_clock)


async def _admitted(limiter: MultiLimiter, hits: list[tuple[LimitRule, str]], tries: int) -> int:
    return sum([(await limiter.consume(hits)).allowed for _ in range(tries)])


async def test_every_window_of_a_rule_is_enforced(limiter: MultiLimiter, manual_clock: ManualClock) -> None:
    hits = [(_rule("api", "2/second", "5/minute"), "client")]
    assert await _admitted(limiter, hits, 4) == 2  # the second window binds first
    manual_clock.advance(1.0)
    assert await _admitted(limiter, hits, 4) == 2
    manual_clock.advance(1.0)
    assert await _admitted(limiter, hits, 4) == 1  # then the minute window: 5 in all
    manual_clock.advance(1.0)
    decision = await limiter.consume(hits)
    assert not decision.allowed
    assert decision.violated == "api"


async def test_a_request_refused_by_one_rule_spends_nothing_from_another(limiter: MultiLimiter) -> None:
    per_second = _rule("per-second", "3/second")
    per_minute = _rule("per-minute", "1/minute")
    both = [(per_second, "client"), (per_minute, "client")]
    assert (await limiter.consume(both)).allowed
    for _ in range(5):
        refused = await limiter.consume(both)
        assert not refused.allowed
        assert refused.violated == "per-minute"
    # only the one admitted request was spent from the per-second rule
    assert await _admitted(limiter, [(per_second, "client")], 5) == 2


async def test_peek_spends_nothing(limiter: MultiLimiter) -> None:
    hits = [(_rule("r", "3/second"), "client")]
    for _ in range(10):
        assert (await limiter.peek(hits)).allowed
    assert await _admitted(limiter, hits, 5) == 3


async def test_peek_answers_what_consume_would(limiter: MultiLimiter) -> None:
    hits = [(_rule("r", "3/second"), "client")]
    await _admitted(limiter, hits, 3)
    peeked = await limiter.peek(hits)
    assert not peeked.allowed
    assert peeked.retry_after_s == pytest.approx(1 / 3)


async def test_refund_gives_back_what_was_spent(limiter: MultiLimiter) -> None:
    hits = [(_rule("r", "3/second", "10/hour"), "client")]
    assert await _admitted(limiter, hits, 4) == 3
    await limiter.refund(hits)
    assert await _admitted(limiter, hits, 3) == 1


@pytest.mark.parametrize(
    ("rates", "burst", "expected"),
    [
        (("10/second", "100/minute"), 50, 50),  # the shortest window is deepened to the burst
        (("10/second", "30/minute"), 50, 30),  # the longer window keeps its own limit
        (("10/second", "30/hour"), 50, 30),  # also when it is a sliding window
    ],
    ids=["shortest-deepened", "longer-gcra-untouched", "longer-sliding-untouched"],
)
async def test_burst_deepens_only_the_shortest_window(
    limiter: MultiLimiter, rates: tuple[str, ...], burst: int, expected: int
) -> None:
    hits = [(_rule("b", *rates, burst=burst), "client")]
    assert await _admitted(limiter, hits, 60) == expected


async def test_violated_names_the_refusing_rule(limiter: MultiLimiter) -> None:
    hits = [(_rule("generous", "100/second"), "client"), (_rule("strict", "1/second"), "client")]
    first = await limiter.consume(hits)
    assert first.allowed
    assert first.violated is None
    second = await limiter.consume(hits)
    assert not second.allowed
    assert second.violated == "strict"
    assert second.retry_after_s == pytest.approx(1.0)


async def test_quota_reports_remaining_and_reset(limiter: MultiLimiter) -> None:
    hits = [(_rule("r", "10/second"), "client")]
    decision = None
    for _ in range(3):
        decision = await limiter.consume(hits)
    assert decision is not None
    (quota,) = decision.quota
    assert (quota.name, quota.limit, quota.window_s, quota.remaining) == ("r", 10, 1.0, 7)
    assert quota.reset_s == pytest.approx(0.3)


async def test_quota_reports_the_most_constrained_window(limiter: MultiLimiter, manual_clock: ManualClock) -> None:
    hits = [(_rule("r", "10/second", "12/minute"), "client")]
    await _admitted(limiter, hits, 9)
    assert [(q.limit, q.remaining) for q in (await limiter.consume(hits)).quota] == [(10, 0)]
    manual_clock.advance(1.0)  # the second window is full again; the minute window has 2 of 12 left
    assert [(q.limit, q.remaining) for q in (await limiter.consume(hits)).quota] == [(12, 1)]


async def test_quota_has_one_entry_per_rule(limiter: MultiLimiter) -> None:
    hits = [(_rule("a", "5/second"), "client"), (_rule("b", "100/hour"), "client")]
    decision = await limiter.consume(hits)
    assert [(q.name, q.limit, q.remaining) for q in decision.quota] == [("a", 5, 4), ("b", 100, 99)]


async def test_ratelimit_headers_use_structured_field_items(limiter: MultiLimiter) -> None:
    hits = [(_rule("a", "10/second"), "client"), (_rule("b", "100/hour"), "client")]
    for _ in range(2):
        decision = await limiter.consume(hits)
    headers = dict(ratelimit_headers(decision))
    assert headers[b"ratelimit-policy"] == b'"a";q=10;w=1, "b";q=100;w=3600'
    reset_b = headers[b"ratelimit"].split(b", ")[1]
    assert headers[b"ratelimit"].startswith(b'"a";r=8;t=1, ')
    assert reset_b.startswith(b'"b";r=98;t=')
    assert 1 <= int(reset_b.rsplit(b"=", 1)[1]) <= 3600


async def test_retry_after_header_of_a_refusal_is_a_whole_number_of_seconds(limiter: MultiLimiter) -> None:
    hits = [(_rule("r", "10/second"), "client")]
    await _admitted(limiter, hits, 10)
    refused = await limiter.consume(hits)
    assert not refused.allowed
    assert 0 < refused.retry_after_s < 1
    assert retry_after_value(refused.retry_after_s) == b"1"


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0.0, b"1"), (0.1, b"1"), (1.0, b"1"), (1.01, b"2"), (59.5, b"60")],  # RFC 9110 section 10.2.3
    ids=["zero", "fraction", "whole", "just-over", "rounds-up"],
)
def test_retry_after_value_rounds_up_to_at_least_one(seconds: float, expected: bytes) -> None:
    assert retry_after_value(seconds) == expected


def test_no_quota_means_no_ratelimit_headers() -> None:
    assert ratelimit_headers(LimitDecision(True, 0.0, None, ())) == ()
