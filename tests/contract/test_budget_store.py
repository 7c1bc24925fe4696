"""The egress budget store contract (counters, and executions' starts for their lifetime), run on the
memory store and on the real Redis.

Same scenarios, same manual clock, same answers: exact caps, all-or-nothing spending, windows
anchored at first use, reads that spend nothing. Redis tests use their own key prefix and delete
it; under ``CI=true`` an unreachable Redis fails the run.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from portcullis.egress.budgets import BudgetCounterStore, BudgetLimits, Budgets, CallContext, MemoryBudgetStore
from portcullis.egress.lifetime import MEMORY_S, ExecutionLifetime
from portcullis.errors import ExecutionExpired
from portcullis.stores.base import EgressStateStore, Spend
from portcullis.stores.redis_budgets import RedisBudgetStore
from portcullis.testing import ManualClock

CTX = CallContext(execution_id="ex-1", workflow_id="wf-1", user="alice")


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> EgressStateStore:
    if request.param == "memory":
        return MemoryBudgetStore()
    client, prefix = request.getfixturevalue("redis_space")
    return RedisBudgetStore(client, key_prefix=prefix, server_time=False)


async def test_fifty_parallel_calls_against_ten_admit_exactly_ten(store: BudgetCounterStore) -> None:
    budgets = Budgets(BudgetLimits(execution_calls=10), store, ManualClock())
    decisions = await asyncio.gather(*(budgets.consume(CTX, "r") for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 10


async def test_a_refusal_spends_nothing_anywhere(store: BudgetCounterStore) -> None:
    budgets = Budgets(BudgetLimits(execution_calls=None, workflow_calls_per_day=100, user_calls_per_day=2),
                      store, ManualClock())
    assert [(await budgets.consume(CTX, "r")).allowed for _ in range(3)] == [True, True, False]
    assert await budgets.remaining(CTX, "r") == {"workflow_calls_per_day": 98.0, "user_calls_per_day": 0.0}


async def test_windows_are_anchored_at_first_use(store: BudgetCounterStore) -> None:
    clock = ManualClock()
    budgets = Budgets(BudgetLimits(execution_calls=None, workflow_calls_per_hour=1), store, clock)
    clock.advance(777)
    assert (await budgets.consume(CTX, "r")).allowed
    refused = await budgets.consume(CTX, "r")
    assert not refused.allowed and refused.reset_s == pytest.approx(3600)
    clock.advance(3599.5)
    assert not (await budgets.consume(CTX, "r")).allowed
    clock.advance(0.5)
    assert (await budgets.consume(CTX, "r")).allowed


async def test_costs_are_exact(store: BudgetCounterStore) -> None:
    budgets = Budgets(BudgetLimits(execution_calls=None, execution_cost=0.3), store, ManualClock())
    assert [(await budgets.consume(CTX, "r", cost=0.1)).allowed for _ in range(4)] == [True, True, True, False]


async def test_redis_uses_its_own_clock_when_asked(redis_space: tuple[Redis, str]) -> None:
    client, prefix = redis_space
    store = RedisBudgetStore(client, key_prefix=prefix)  # Redis TIME decides windows
    budgets = Budgets(BudgetLimits(execution_calls=1), store, ManualClock(monotonic=0.0))
    assert [(await budgets.consume(CTX, "r")).allowed for _ in range(2)] == [True, False]
    ttl = await client.pttl(f"{prefix}{{pclb}}:x:wf-1:ex-1:calls")
    assert 3_600_000 < ttl <= 3_601_000  # the window ends an hour after first use, on Redis's clock


async def test_a_reset_clears_one_subject_and_leaves_every_other_alone(store: BudgetCounterStore) -> None:
    limits = BudgetLimits(execution_calls=2, workflow_calls_per_day=3, user_calls_per_day=5,
                          endpoint_calls_per_workflow_day={"llm": 2})
    budgets = Budgets(limits, store, ManualClock())
    other = CallContext(execution_id="ex-2", workflow_id="wf-2", user="bob")
    for ctx in (CTX, CTX, other):
        assert (await budgets.consume(ctx, "llm")).allowed
    assert not (await budgets.consume(CTX, "llm")).allowed  # execution_calls spent
    assert await budgets.reset(workflow_id="wf-1", execution_id="ex-1") == ["x:wf-1:ex-1:calls", "x:wf-1:ex-1:cost"]
    left = await budgets.remaining(CTX, "llm")
    assert left["execution_calls"] == 2.0 and left["workflow_calls_per_day"] == 1.0  # only the execution's
    await budgets.reset(workflow_id="wf-1")
    assert (await budgets.remaining(CTX, "llm"))["endpoint_calls:llm"] == 2.0
    await budgets.reset(user="alice")
    assert (await budgets.remaining(CTX, "llm"))["user_calls_per_day"] == 5.0
    assert await budgets.remaining(other, "llm") == {"execution_calls": 1.0, "workflow_calls_per_day": 2.0,
                                                      "user_calls_per_day": 4.0, "endpoint_calls:llm": 1.0}
    with pytest.raises(ValueError, match="with its workflow"):
        await budgets.reset(execution_id="ex-1")


# Execution starts for the maximum lifetime: the first call starts the clock once, a dry look
# starts nothing, and the start is forgotten after its keep time.


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


async def test_counter_lists_made_afresh_each_call_spend_from_their_own_counters(store: BudgetCounterStore) -> None:
    # The Redis store encodes a list of counters once per list object, in a table it clears when
    # full; lists made and dropped call after call (whose ids Python reuses once the table lets
    # them go) must still reach their own keys.
    clock = ManualClock()
    for i in range(5000):
        items = [Spend(f"b{i}", f"k:{i}", 5, 60.0, 1)]
        assert (await store.spend(items, clock.monotonic()))[2] == [1], i
        del items
    assert await store.used([Spend("b", f"k:{i}", 5, 60.0, 0) for i in range(5000)], clock.monotonic()) == [1] * 5000
