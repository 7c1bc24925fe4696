"""Emergency limits in the limiter: a factor scales every limit of a decision, on the memory and the
Redis counters alike, and a ramp restores the limits gradually (seed 000 section 6.3, "suspected
DDoS": reduce limits temporarily, restore gradually). Time is a manual clock; Redis is real.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from tests.conftest import missing_service, redis_client, redis_reachable

from portcullis.config.types import RateWindow
from portcullis.limiting.base import CounterStore
from portcullis.limiting.emergency import EmergencyFactor, EmergencyTable, ramp
from portcullis.limiting.limiter import MultiLimiter
from portcullis.limiting.rules import LimitRule
from portcullis.stores.memory import MemoryCounterStore
from portcullis.stores.redis_counters import RedisCounterStore
from portcullis.testing import ManualClock

PER_MINUTE = LimitRule(name="per-consumer", windows=[RateWindow(100, 60.0)])
PER_DAY = LimitRule(name="per-day", windows=[RateWindow(1000, 86400.0)])


@pytest.fixture(params=["memory", "redis"])
async def counters(request: pytest.FixtureRequest) -> AsyncIterator[CounterStore]:
    """The memory counters, and the Redis script on the machine's Redis under a prefix of its own."""
    if request.param == "memory":
        yield MemoryCounterStore()
        return
    if not await redis_reachable():
        missing_service("Redis is not reachable on 127.0.0.1:6379")
    client = await redis_client()
    prefix = f"pcltest:{uuid.uuid4().hex}:"
    try:
        yield RedisCounterStore(client, key_prefix=prefix, server_time=False)
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def admitted(limiter: MultiLimiter, rule: LimitRule, n: int, *, factor: float = 1.0) -> int:
    return sum([(await limiter.consume([(rule, "alice")], factor=factor)).allowed for _ in range(n)])


@pytest.mark.parametrize(("now", "expected"), [
    (50.0, 0.1), (99.9, 0.1),  # full strength until 100
    (100.0, 0.1), (150.0, 0.55), (199.0, 0.991),  # then linear back to 1 over 100 s
    (200.0, 1.0), (1e9, 1.0),
], ids=["holding", "just-before-the-end", "ramp-start", "half-way", "almost-restored", "restored", "long-after"])
def test_an_emergency_holds_its_factor_then_ramps_back_linearly(now: float, expected: float) -> None:
    assert ramp(0.1, 100.0, 100.0, now) == pytest.approx(expected)


def test_without_a_restore_period_the_limits_come_back_at_once() -> None:
    assert (ramp(0.1, 100.0, 0.0, 99.0), ramp(0.1, 100.0, 0.0, 100.0)) == (0.1, 1.0)


def test_the_smallest_factor_of_gateway_route_and_consumer_wins_rounded_down() -> None:
    table = EmergencyTable(
        gateway=[EmergencyFactor(0.5, 100.0, 0.0)], routes={"orders": [EmergencyFactor(0.257, 100.0, 0.0)]},
        consumers={"mallory": [EmergencyFactor(0.1, 100.0, 0.0)]},
    )
    assert table.factor("orders", "alice", 0.0) == pytest.approx(0.25)  # 0.257 rounded down to a step
    assert table.factor("orders", "mallory", 0.0) == pytest.approx(0.1)
    assert table.factor("health", "alice", 0.0) == pytest.approx(0.5)
    assert table.factor("health", "alice", 100.0) == 1.0  # every one has ended


async def test_a_factor_of_a_tenth_admits_a_tenth_of_the_limit(counters: CounterStore) -> None:
    limiter = MultiLimiter(counters, ManualClock())
    assert await admitted(limiter, PER_MINUTE, 50, factor=0.1) == 10


async def test_requests_counted_before_the_emergency_count_against_the_scaled_limit(counters: CounterStore) -> None:
    limiter = MultiLimiter(counters, ManualClock())
    assert await admitted(limiter, PER_DAY, 500) == 500
    assert await admitted(limiter, PER_DAY, 10, factor=0.1) == 0  # 500 already spent of a scaled 100
    assert await admitted(limiter, PER_DAY, 600) == 500  # the emergency over: the configured limit again


async def test_a_gcra_bucket_keeps_its_used_fraction_and_refills_at_the_scaled_rate(counters: CounterStore) -> None:
    clock = ManualClock()
    limiter = MultiLimiter(counters, clock)
    assert await admitted(limiter, PER_MINUTE, 50) == 50  # half the bucket used
    assert await admitted(limiter, PER_MINUTE, 10, factor=0.1) == 5  # half of a scaled 10 left
    clock.advance(6.0)  # one scaled emission interval (60 s / 10)
    assert await admitted(limiter, PER_MINUTE, 10, factor=0.1) == 1


async def test_the_scaled_limit_is_what_the_ratelimit_headers_report(counters: CounterStore) -> None:
    limiter = MultiLimiter(counters, ManualClock())
    decision = await limiter.consume([(PER_MINUTE, "alice")], factor=0.25)
    assert (decision.quota[0].limit, decision.quota[0].remaining) == (25, 24)


async def test_a_limit_never_scales_below_one(counters: CounterStore) -> None:
    tiny = LimitRule(name="tiny", windows=[RateWindow(3, 60.0)])
    limiter = MultiLimiter(counters, ManualClock())
    assert await admitted(limiter, tiny, 5, factor=0.01) == 1


async def test_a_ramp_admits_more_as_the_limits_restore(counters: CounterStore) -> None:
    clock = ManualClock()
    limiter = MultiLimiter(counters, clock)
    schedule = EmergencyTable(gateway=[EmergencyFactor(0.1, clock.wall() + 60.0, 600.0)])
    seen = []
    for _ in range(4):
        factor = schedule.factor(None, None, clock.wall())
        seen.append((factor, await admitted(limiter, PER_DAY, 2000, factor=factor)))
        clock.advance(240.0)
    # 100 at 0.1; at 180 s into the ramp 0.37 of 1000 (370 in all); at 420 s, 0.73 (730); then 1000
    assert seen == [(0.1, 100), (pytest.approx(0.37), 270), (pytest.approx(0.73), 360), (1.0, 270)]
