"""Egress budgets: exact caps, all-or-nothing spending, anchored windows, costs in exact units."""

from __future__ import annotations

import asyncio

import pytest

from portcullis.egress.budgets import BudgetLimits, Budgets, CallContext, MemoryBudgetStore
from portcullis.egress.call.outcome import budget_left
from portcullis.testing import ManualClock

CTX = CallContext(execution_id="ex-1", workflow_id="wf-billing", user="alice")


def budgets(limits: BudgetLimits, clock: ManualClock | None = None) -> tuple[Budgets, ManualClock]:
    clk = clock or ManualClock()
    return Budgets(limits, MemoryBudgetStore(), clk), clk


async def test_fifty_parallel_calls_against_a_budget_of_ten_admit_exactly_ten() -> None:
    b, _ = budgets(BudgetLimits(execution_calls=10))
    decisions = await asyncio.gather(*(b.consume(CTX, "github") for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 10
    refused = [d for d in decisions if not d.allowed]
    assert all(d.exhausted == "execution_calls" and d.remaining["execution_calls"] == 0 for d in refused)


async def test_the_default_caps_an_execution_at_one_hundred_calls_and_other_executions_are_separate() -> None:
    b, _ = budgets(BudgetLimits())
    results = [(await b.consume(CTX, "github")).allowed for _ in range(101)]
    assert results == [True] * 100 + [False]
    other = CallContext(execution_id="ex-2", workflow_id="wf-billing", user="alice")
    assert (await b.consume(other, "github")).allowed


async def test_a_refusal_spends_nothing_from_any_other_budget() -> None:
    b, _ = budgets(BudgetLimits(execution_calls=None, workflow_calls_per_day=100, user_calls_per_day=2))
    assert (await b.consume(CTX, "github")).allowed
    assert (await b.consume(CTX, "github")).allowed
    refused = await b.consume(CTX, "github")
    assert (refused.allowed, refused.exhausted) == (False, "user_calls_per_day")
    # the workflow was charged for the two admitted calls only
    another_user = CallContext(execution_id="ex-1", workflow_id="wf-billing", user="bob")
    assert (await b.consume(another_user, "github")).remaining["workflow_calls_per_day"] == 97


async def test_windows_start_at_first_use_and_reset_after_their_length() -> None:
    b, clock = budgets(BudgetLimits(execution_calls=None, workflow_calls_per_hour=2))
    clock.advance(1234)  # windows are anchored at first use, not at the top of the hour
    assert (await b.consume(CTX, "r")).allowed and (await b.consume(CTX, "r")).allowed
    refused = await b.consume(CTX, "r")
    assert not refused.allowed and refused.reset_s == pytest.approx(3600)
    clock.advance(3599)
    assert not (await b.consume(CTX, "r")).allowed
    clock.advance(1)
    assert (await b.consume(CTX, "r")).allowed


async def test_costs_add_up_exactly_and_refuse_the_call_that_would_overspend() -> None:
    b, _ = budgets(BudgetLimits(execution_calls=None, execution_cost=0.3, user_cost_per_day=10))
    for _ in range(3):
        assert (await b.consume(CTX, "openai", cost=0.1)).allowed  # 0.1 + 0.1 + 0.1 == 0.3, exactly
    over = await b.consume(CTX, "openai", cost=0.01)
    assert (over.allowed, over.exhausted) == (False, "execution_cost")
    assert over.remaining["execution_cost"] == 0.0
    assert (await b.consume(CTX, "openai", cost=0.0)).allowed  # a free call still passes


async def test_per_endpoint_budgets_inside_a_workflow() -> None:
    b, _ = budgets(BudgetLimits(execution_calls=None, endpoint_calls_per_workflow_day={"stripe": 1}))
    assert (await b.consume(CTX, "stripe")).allowed
    refused = await b.consume(CTX, "stripe")
    assert (refused.allowed, refused.exhausted) == (False, "endpoint_calls:stripe")
    assert (await b.consume(CTX, "github")).allowed  # other endpoints are not capped by it


async def test_zero_or_none_written_out_lifts_a_cap() -> None:
    # The convention: the per-execution cap defaults to 100, and 0 means unlimited only
    # when someone writes it.
    for lifted in (0, None):
        free, _ = budgets(BudgetLimits(execution_calls=lifted))
        assert all([(await free.consume(CTX, "r")).allowed for _ in range(500)])
    capped, _ = budgets(BudgetLimits())
    assert [(await capped.consume(CTX, "r")).allowed for _ in range(101)][-1] is False


def test_negative_budgets_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        BudgetLimits(execution_calls=-1)
    with pytest.raises(ValueError, match="negative"):
        BudgetLimits(endpoint_calls_per_workflow_day={"x": -5})


async def test_remaining_is_read_without_spending() -> None:
    b, _ = budgets(BudgetLimits(execution_calls=5, user_calls_per_day=10))
    assert await b.remaining(CTX, "r") == {"execution_calls": 5.0, "user_calls_per_day": 10.0}
    await b.consume(CTX, "r")
    assert await b.remaining(CTX, "r") == {"execution_calls": 4.0, "user_calls_per_day": 9.0}
    assert await b.remaining(CTX, "r") == {"execution_calls": 4.0, "user_calls_per_day": 9.0}


async def test_an_endpoint_budget_of_a_route_whose_name_ends_in_cost_counts_calls_not_money() -> None:
    b, _ = budgets(BudgetLimits(execution_calls=None, endpoint_calls_per_workflow_day={"cloud-cost": 5}))
    decision = await b.consume(CTX, "cloud-cost")
    assert decision.remaining == {"endpoint_calls:cloud-cost": 4.0}


@pytest.mark.parametrize(("left", "shown"), [
    (99.0, b"execution_calls=99"), (1_234_567.0, b"execution_calls=1234567"), (0.0, b"execution_calls=0"),
    (4.25, b"execution_calls=4.25"), (0.000001, b"execution_calls=0.000001"), (1234567.5, b"execution_calls=1234567.5"),
])
def test_what_is_left_of_a_budget_is_told_exactly(left: float, shown: bytes) -> None:
    assert budget_left("execution_calls", left) == shown


async def test_a_flood_of_fresh_executions_spends_from_each_ones_own_counters_and_the_shared_ones() -> None:
    # The counter keys of recent callers are kept (bounded); a caller making up execution ids
    # churns through them and every call must still land on its own execution's counters.
    b, _ = budgets(BudgetLimits(execution_calls=1, user_calls_per_day=6000))
    for i in range(5000):
        ctx = CallContext(execution_id=f"ex-{i}", workflow_id="wf", user="alice")
        assert (await b.consume(ctx, "github")).allowed
        assert not (await b.consume(ctx, "github")).allowed  # that execution's one call is spent
    assert (await b.remaining(CTX, "github"))["user_calls_per_day"] == 1000
    assert len(b._plans) <= 4096


async def test_calls_of_different_costs_in_one_execution_each_spend_their_own_amount() -> None:
    b, _ = budgets(BudgetLimits(execution_calls=None, execution_cost=1.0))
    assert (await b.consume(CTX, "openai", cost=0.25)).remaining["execution_cost"] == 0.75
    assert (await b.consume(CTX, "openai", cost=0.5)).remaining["execution_cost"] == 0.25
    assert (await b.consume(CTX, "openai", cost=0.25)).remaining["execution_cost"] == 0.0
