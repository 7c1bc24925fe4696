"""The egress memory stores (budget counters, execution starts, LLM reservations) stay bounded
under a flood of fresh execution ids, and forget the least recently used first.

A caller names its own execution ids, and each fresh one makes counters that live for the
execution window (an hour by default): without a cap that holds, one caller grows memory for an
hour, and a store that scans itself on every call past its cap stalls the door. Assertions are on
entry counts and decisions, never on elapsed time.
"""

from __future__ import annotations

from portcullis.stores.base import BudgetLine, Reservation, Spend
from portcullis.stores.memory_budgets import MemoryBudgetStore
from portcullis.stores.memory_reservations import MemoryReservationStore

HOUR, DAY = 3600.0, 86400.0


def _calls(execution: int) -> Spend:
    return Spend("execution_calls", f"x:wf:{execution}:calls", 100, HOUR, 1)


async def test_a_flood_of_fresh_executions_keeps_the_budget_counters_at_their_cap() -> None:
    store = MemoryBudgetStore(max_entries=1000)
    for i in range(5000):  # nothing expires within the test: only the cap can hold it
        allowed, *_ = await store.spend([_calls(i)], float(i) / 1000)
        assert allowed and len(store._counters) <= 1000
    assert len(store._counters) == 1000


async def test_a_counter_spent_from_on_every_call_outlives_the_flood_and_still_refuses_at_its_limit() -> None:
    store = MemoryBudgetStore(max_entries=100)
    user = Spend("user_calls_per_day", "u:alice:d", 3000, DAY, 1)
    outcomes = [(await store.spend([_calls(i), user], 1.0))[0] for i in range(3001)]
    assert outcomes == [True] * 3000 + [False]  # the busy user's counter was never the one forgotten


async def test_ended_windows_are_dropped_as_calls_go_by_without_reaching_the_cap() -> None:
    store = MemoryBudgetStore(max_entries=1_000_000)
    for i in range(2000):  # a new execution every second, each window one minute long
        assert (await store.spend([Spend("execution_calls", f"x:wf:{i}:calls", 10, 60.0, 1)], float(i)))[0]
    assert len(store._counters) <= 61


async def test_execution_starts_stay_at_their_cap_and_an_ended_one_is_forgotten() -> None:
    store = MemoryBudgetStore(max_entries=50)
    for i in range(500):
        assert await store.execution_age(f"x:wf:{i}", 0.0, keep_s=HOUR) == 0.0
        assert len(store._starts) <= 50
    assert await store.execution_age("x:wf:499", 10.0, keep_s=HOUR) == 10.0  # a recent one is remembered
    assert await store.execution_age("x:wf:499", HOUR + 1, keep_s=HOUR, start=False) is None


def _tokens(execution: int, amount: int = 10) -> BudgetLine:
    return BudgetLine("execution_tokens", f"x:wf:{execution}:tokens", 1000, HOUR, amount)


async def test_a_flood_of_reservations_keeps_the_lines_at_their_cap() -> None:
    store = MemoryReservationStore(max_lines=1000)
    for i in range(5000):
        held = await store.reserve([_tokens(i)], 1.0, ttl_s=60.0)
        assert isinstance(held, Reservation)
        await store.settle(held, [5], 1.0)  # spent, so not idle: only the cap can drop it
        assert len(store._lines) <= 1000


async def test_a_line_held_by_a_call_in_flight_is_never_forgotten() -> None:
    store = MemoryReservationStore(max_lines=10)
    route = BudgetLine("route_tokens_per_minute", "r:openai:m", 100, 60.0, 60)
    in_flight = await store.reserve([route], 0.0, ttl_s=300.0)  # the oldest line, held all along
    assert isinstance(in_flight, Reservation)
    for i in range(100):
        held = await store.reserve([_tokens(i)], 0.0, ttl_s=300.0)
        assert isinstance(held, Reservation)
        await store.settle(held, [5], 0.0)
    assert "r:openai:m" in store._lines
    # what it holds still counts: 60 of 100 held, so a call wanting 50 more is refused
    more = BudgetLine("route_tokens_per_minute", "r:openai:m", 100, 60.0, 50)
    assert not isinstance(await store.reserve([more], 0.0, ttl_s=60.0), Reservation)
