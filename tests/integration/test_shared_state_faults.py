"""Limits and budgets when Redis goes away and comes back, against a private redis-server this test owns.

The machine's shared Redis is never stopped: each test starts its own ``redis-server`` on a free
127.0.0.1 port (no persistence), kills it by PID, and restarts it on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from tests.redis_server import PrivateRedis

from portcullis.config.types import RateWindow
from portcullis.egress.budgets import STORE_UNAVAILABLE, BudgetLimits, Budgets, CallContext
from portcullis.egress.lifetime import ExecutionLifetime
from portcullis.errors import ExecutionExpired, StoreUnavailable
from portcullis.limiting.rules import LimitRule
from portcullis.stores.failover import FailoverBudgetStore, FailoverCounterStore, Outage
from portcullis.stores.redis_budgets import RedisBudgetStore
from portcullis.stores.redis_counters import RedisCounterStore
from portcullis.testing import ManualClock

pytestmark = pytest.mark.faults
RULE = LimitRule(name="per-key", windows=[RateWindow(10, 60.0)])


async def make(port: int, on_failure: str, clock: ManualClock) -> FailoverCounterStore:
    # No client-side retries: the failover store decides what a failure means, at once. A killed
    # server refuses connections at once; the 2 s timeout only spares a busy CI machine a false
    # outage on a healthy Redis (0.5 s once timed out the very first script load).
    client = await asyncio.to_thread(lambda: Redis(host="127.0.0.1", port=port, socket_connect_timeout=2,
                                                   socket_timeout=2, retry=Retry(NoBackoff(), 0)))
    shared = RedisCounterStore(client, key_prefix=f"pcltest:{uuid.uuid4().hex}:", server_time=False)
    return FailoverCounterStore(shared, clock, instances=2, on_failure=on_failure)  # type: ignore[arg-type]


async def admitted(store: FailoverCounterStore, n: int, now: float, subject: str = "k") -> int:
    return sum([(await store.apply([(RULE, subject)], now, 1, commit=True)).allowed for _ in range(n)])


async def test_fail_open_uses_the_local_share_and_recovers(private_redis: PrivateRedis) -> None:
    clock = ManualClock()
    store = await make(private_redis.port, "open", clock)
    try:
        now = 1_700_000_000.0
        assert await admitted(store, 4, now) == 4 and not store.degraded  # counted in Redis
        await private_redis.kill()
        # 10 per minute shared by 2 instances: this one alone admits 5 while Redis is away,
        # and never answers with an error.
        assert await admitted(store, 8, now, "other") == 5
        assert store.degraded
        await private_redis.start()
        clock.advance(1.0)  # past the first reconnect backoff (0.5 s)
        assert (await store.apply([(RULE, "fresh")], now, 1, commit=True)).allowed
        assert not store.degraded  # back on the shared store
    finally:
        await store.aclose()


async def test_fail_closed_refuses_while_redis_is_away(private_redis: PrivateRedis) -> None:
    clock = ManualClock()
    store = await make(private_redis.port, "closed", clock)
    try:
        await private_redis.kill()
        decision = await store.apply([(RULE, "k")], 1_700_000_000.0, 1, commit=True)
        assert (decision.allowed, decision.violated, decision.retry_after_s) == (
            False, "shared_state_unavailable", 1.0)
    finally:
        await store.aclose()


async def test_a_rules_own_on_store_failure_overrides_the_default(private_redis: PrivateRedis) -> None:
    clock = ManualClock()
    store = await make(private_redis.port, "open", clock)
    strict = LimitRule(name="payments", windows=[RateWindow(10, 60.0)], on_store_failure="closed")
    try:
        await private_redis.kill()
        now = 1_700_000_000.0
        assert (await store.apply([(RULE, "k")], now, 1, commit=True)).allowed  # the default: open
        refused = await store.apply([(RULE, "k"), (strict, "k")], now, 1, commit=True)
        assert (refused.allowed, refused.violated) == (False, "shared_state_unavailable")  # one closed rule decides
    finally:
        await store.aclose()


@contextlib.asynccontextmanager
async def budget_store(port: int, on_failure: str, clock: ManualClock) -> AsyncIterator[FailoverBudgetStore]:
    client = await asyncio.to_thread(lambda: Redis(host="127.0.0.1", port=port, socket_connect_timeout=2,
                                                   socket_timeout=2, retry=Retry(NoBackoff(), 0)))
    shared = RedisBudgetStore(client, key_prefix=f"pcltest:{uuid.uuid4().hex}:", server_time=False)
    try:
        yield FailoverBudgetStore(shared, Outage(clock), instances=2, on_failure=on_failure)  # type: ignore[arg-type]
    finally:
        await client.aclose()


async def test_budgets_fail_closed_while_redis_is_away_and_say_why(private_redis: PrivateRedis) -> None:
    clock = ManualClock()
    async with budget_store(private_redis.port, "closed", clock) as store:
        budgets = Budgets(BudgetLimits(execution_calls=10), store, clock)
        ctx = CallContext("run-1", "wf", "alice")
        assert (await budgets.consume(ctx, "github")).allowed
        await private_redis.kill()
        refused = await budgets.consume(ctx, "github")
        assert (refused.allowed, refused.exhausted, refused.reset_s) == (False, STORE_UNAVAILABLE, 1.0)
        await private_redis.start()
        clock.advance(1.0)
        assert (await budgets.consume(ctx, "github")).allowed  # recovered (the private Redis kept nothing)


async def test_budgets_fail_open_to_a_local_share_when_configured(private_redis: PrivateRedis) -> None:
    clock = ManualClock()
    async with budget_store(private_redis.port, "open", clock) as store:
        budgets = Budgets(BudgetLimits(execution_calls=10), store, clock)
        await private_redis.kill()
        decisions = [await budgets.consume(CallContext("run-1", "wf", "alice"), "github") for _ in range(8)]
    assert [d.allowed for d in decisions].count(True) == 5  # 10 shared by 2 instances
    assert decisions[-1].exhausted == "execution_calls"


async def test_execution_lifetimes_follow_the_budgets_rule_while_redis_is_away(private_redis: PrivateRedis) -> None:
    clock = ManualClock()
    ctx = CallContext("run-1", "wf", "alice")
    async with budget_store(private_redis.port, "closed", clock) as closed:
        assert (await ExecutionLifetime(60, closed, clock).check(ctx)).allowed
        await private_redis.kill()
        with pytest.raises(StoreUnavailable):  # not a fresh clock on every instance during the outage
            await ExecutionLifetime(60, closed, clock).check(ctx)
    async with budget_store(private_redis.port, "open", clock) as opened:
        lifetime = ExecutionLifetime(60, opened, clock)
        assert (await lifetime.check(ctx)).age_s == 0.0  # this instance's own start
        clock.advance(60)
        with pytest.raises(ExecutionExpired):
            await lifetime.check(ctx)
