"""Execution starts for the maximum lifetime, on the memory store and on the real Redis: the first call
starts the clock once, a dry look starts nothing, and the start is forgotten after its keep time.

Redis tests use their own key prefix (deleted afterwards); under ``CI=true`` an unreachable Redis
fails the run.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from portcullis.egress.budgets import CallContext, MemoryBudgetStore
from portcullis.egress.lifetime import MEMORY_S, ExecutionLifetime
from portcullis.errors import ExecutionExpired
from portcullis.stores.base import EgressStateStore
from portcullis.stores.redis_budgets import RedisBudgetStore
from portcullis.testing import ManualClock

CTX = CallContext(execution_id="ex-1", workflow_id="wf-1", user="alice")


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> EgressStateStore:
    if request.param == "memory":
        return MemoryBudgetStore()
    client, prefix = request.getfixturevalue("redis_space")
    return RedisBudgetStore(client, key_prefix=prefix, server_time=False)


async def test_the_first_call_starts_the_clock_and_calls_after_the_lifetime_are_refused(store: EgressStateStore) -> None:
    clock = ManualClock()
    lifetime = ExecutionLifetime(600, store, clock)
    first = await lifetime.check(CTX)
    assert (first.allowed, first.age_s, first.remaining_s) == (True, 0.0, 600.0)
    clock.advance(599)
    assert (await lifetime.check(CTX)).remaining_s == pytest.approx(1.0)
    clock.advance(1)
    with pytest.raises(ExecutionExpired) as expired:
        await lifetime.check(CTX)
    assert expired.value.reason == "execution_expired"
    clock.advance(3600)
    with pytest.raises(ExecutionExpired):
        await lifetime.check(CTX)  # stays expired: a later call does not restart the clock


async def test_each_execution_has_its_own_clock(store: EgressStateStore) -> None:
    clock = ManualClock()
    lifetime = ExecutionLifetime(60, store, clock)
    await lifetime.check(CTX)
    clock.advance(61)
    later = CallContext(execution_id="ex-2", workflow_id="wf-1", user="alice")
    same_id_other_workflow = CallContext(execution_id="ex-1", workflow_id="wf-2", user="alice")
    assert (await lifetime.check(later)).allowed and (await lifetime.check(same_id_other_workflow)).allowed
    with pytest.raises(ExecutionExpired):
        await lifetime.check(CTX)


async def test_parallel_first_calls_agree_on_one_start(store: EgressStateStore) -> None:
    clock = ManualClock()
    lifetime = ExecutionLifetime(60, store, clock)
    decisions = await asyncio.gather(*(lifetime.check(CTX) for _ in range(20)))
    assert {d.age_s for d in decisions} == {0.0}
    clock.advance(30)
    assert (await lifetime.check(CTX)).age_s == pytest.approx(30)


async def test_a_dry_look_starts_no_clock(store: EgressStateStore) -> None:
    clock = ManualClock()
    lifetime = ExecutionLifetime(60, store, clock)
    assert (await lifetime.peek(CTX)).allowed
    clock.advance(120)
    assert (await lifetime.peek(CTX)).age_s == 0.0
    assert (await lifetime.check(CTX)).allowed  # the first real call starts it now
    clock.advance(60)
    peeked = await lifetime.peek(CTX)
    assert not peeked.allowed and peeked.remaining_s == 0.0


async def test_a_start_is_forgotten_a_day_after_the_lifetime(store: EgressStateStore) -> None:
    clock = ManualClock()
    lifetime = ExecutionLifetime(60, store, clock)
    await lifetime.check(CTX)
    clock.advance(60 + MEMORY_S - 1)
    with pytest.raises(ExecutionExpired):
        await lifetime.check(CTX)
    clock.advance(1)
    assert (await lifetime.check(CTX)).age_s == 0.0


async def test_redis_keeps_the_start_on_its_own_clock_with_an_expiry(redis_space: tuple[Redis, str]) -> None:
    client, prefix = redis_space
    lifetime = ExecutionLifetime(600, RedisBudgetStore(client, key_prefix=prefix), ManualClock(monotonic=0.0))
    assert (await lifetime.check(CTX)).allowed
    ttl = await client.pttl(f"{prefix}{{pclb}}:life:wf-1:ex-1")
    assert (600 + MEMORY_S) * 1000 < ttl <= (600 + MEMORY_S + 1) * 1000
    assert (await lifetime.check(CTX)).age_s < 5  # Redis TIME, not the manual clock's 0


def test_a_lifetime_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ExecutionLifetime(0, MemoryBudgetStore(), ManualClock())
