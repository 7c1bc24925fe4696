"""The budget gauges' tracker: how full each budget is, whose budgets are fullest, in bounded memory."""

from __future__ import annotations

from portcullis.egress.budgets import BudgetLimits, Budgets, CallContext, MemoryBudgetStore
from portcullis.observability.budget_usage import BudgetUsage, RouteUsage, TopBurner, budget_subject
from portcullis.stores.base import BudgetLine
from portcullis.testing import ManualClock

HOUR = 3600.0


def tracked(limits: BudgetLimits, *, top_n: int = 5, capacity: int = 4096) -> tuple[Budgets, BudgetUsage, ManualClock]:
    clock = ManualClock()
    usage = BudgetUsage(clock, top_n=top_n, capacity=capacity)
    budgets = Budgets(limits, MemoryBudgetStore(), clock, usage)
    usage.configure(budgets.limits_by_route(["github", "openai"]))
    return budgets, usage, clock


def ratios(usage: BudgetUsage) -> dict[tuple[str, str], float]:
    return {(r.route, r.budget): r.used_ratio for r in usage.routes()}


async def test_every_configured_budget_is_shown_with_its_limit_before_any_call() -> None:
    _, usage, _ = tracked(BudgetLimits(execution_calls=10, user_cost_per_day=5.0,
                                       endpoint_calls_per_workflow_day={"github": 40}))
    assert usage.routes() == [
        RouteUsage("github", "endpoint_calls:github", 40.0, 0.0),
        RouteUsage("github", "execution_calls", 10.0, 0.0),
        RouteUsage("github", "user_cost_per_day", 5.0, 0.0),
        RouteUsage("openai", "execution_calls", 10.0, 0.0),
        RouteUsage("openai", "user_cost_per_day", 5.0, 0.0),
    ]


async def test_the_used_ratio_is_the_fullest_counter_of_the_budget_on_that_route() -> None:
    budgets, usage, _ = tracked(BudgetLimits(execution_calls=None, workflow_calls_per_day=10))
    for _ in range(8):
        await budgets.consume(CallContext("e1", "wf-busy", "alice"), "github")
    await budgets.consume(CallContext("e2", "wf-quiet", "bob"), "github")
    await budgets.consume(CallContext("e3", "wf-quiet", "bob"), "openai")
    assert ratios(usage) == {("github", "workflow_calls_per_day"): 0.8, ("openai", "workflow_calls_per_day"): 0.2}


async def test_a_refused_call_shows_its_budget_full() -> None:
    budgets, usage, _ = tracked(BudgetLimits(execution_calls=None, user_cost_per_day=1.0))
    assert (await budgets.consume(CallContext("e1", "wf", "alice"), "openai", cost=0.6)).allowed
    assert not (await budgets.consume(CallContext("e1", "wf", "alice"), "openai", cost=0.6)).allowed
    assert ratios(usage)[("openai", "user_cost_per_day")] == 1.0


async def test_a_counter_whose_window_ended_is_no_longer_shown() -> None:
    budgets, usage, clock = tracked(BudgetLimits(execution_calls=None, workflow_calls_per_hour=4))
    for _ in range(3):
        await budgets.consume(CallContext("e1", "wf", "alice"), "github")
    assert ratios(usage)[("github", "workflow_calls_per_hour")] == 0.75
    clock.advance(HOUR)
    assert ratios(usage)[("github", "workflow_calls_per_hour")] == 0.0
    await budgets.consume(CallContext("e1", "wf", "alice"), "github")  # a new window starts from one call
    assert ratios(usage)[("github", "workflow_calls_per_hour")] == 0.25


async def test_an_operator_reset_empties_the_shown_usage() -> None:
    budgets, usage, _ = tracked(BudgetLimits(execution_calls=None, workflow_calls_per_day=4))
    await budgets.consume(CallContext("e1", "wf", "alice"), "github")
    await budgets.reset(workflow_id="wf")
    assert ratios(usage)[("github", "workflow_calls_per_day")] == 0.0 and usage.top() == []


async def test_the_top_burners_are_the_fullest_workflows_and_users_and_never_executions() -> None:
    budgets, usage, _ = tracked(BudgetLimits(execution_calls=100, workflow_calls_per_day=100,
                                             user_calls_per_day=100), top_n=2)
    for n, workflow in enumerate(["wf-a", "wf-b", "wf-c"], start=1):
        for _ in range(n * 10):
            await budgets.consume(CallContext(f"ex-{workflow}", workflow, f"user-{workflow}"), "github")
    top = usage.top()
    assert top == [
        TopBurner("user_calls_per_day", "user", "user-wf-c", 0.3),
        TopBurner("user_calls_per_day", "user", "user-wf-b", 0.2),
        TopBurner("workflow_calls_per_day", "workflow", "wf-c", 0.3),
        TopBurner("workflow_calls_per_day", "workflow", "wf-b", 0.2),
    ]
    assert all(b.budget != "execution_calls" for b in top)


async def test_ten_thousand_executions_keep_memory_bounded_and_the_fullest_counter_stays() -> None:
    budgets, usage, _ = tracked(BudgetLimits(execution_calls=10), capacity=256)
    for _ in range(9):
        await budgets.consume(CallContext("hot", "wf", "alice"), "github")
    for i in range(10_000):
        await budgets.consume(CallContext(f"ex-{i}", "wf", "alice"), "github")
    assert len(usage) <= 256
    assert ratios(usage)[("github", "execution_calls")] == 0.9


async def test_each_call_reports_the_share_of_its_tightest_budget_it_burned() -> None:
    budgets, _, _ = tracked(BudgetLimits(execution_calls=100, user_cost_per_day=5.0))
    decision = await budgets.consume(CallContext("e1", "wf", "alice"), "openai", cost=0.5)
    assert decision.burned == 0.1


def test_llm_lines_are_whose_their_names_say_and_route_wide_ones_are_no_burner() -> None:
    clock = ManualClock()
    usage = BudgetUsage(clock)
    usage.configure({"openai": {"llm_user_tokens_per_day": 1000.0, "llm_route_tokens_per_minute": 100.0,
                                "llm_execution_tokens": 500.0}})
    lines = [BudgetLine("llm_user_tokens_per_day", "llm:openai:u:alice:tokens:d", 1000, 86400.0, 0),
             BudgetLine("llm_route_tokens_per_minute", "llm:openai:r:tokens:m", 100, 60.0, 0),
             BudgetLine("llm_execution_tokens", "llm:openai:x:wf:e1:tokens", 500, None, 0)]
    usage.held("openai", lines, [400, 10, 500], lambda i: budget_subject(lines[i].name, "wf", "e1", "alice"))
    assert ratios(usage) == {("openai", "llm_user_tokens_per_day"): 0.6,
                             ("openai", "llm_route_tokens_per_minute"): 0.9,
                             ("openai", "llm_execution_tokens"): 0.0}
    assert usage.top() == [TopBurner("llm_user_tokens_per_day", "user", "alice", 0.6)]
    clock.advance(10 * 86400.0)  # a lifetime total (no window) is still shown; the windowed ones ended
    usage.held("openai", lines[2:], [100], lambda i: budget_subject(lines[2].name, "wf", "e1", "alice"))
    assert ratios(usage) == {("openai", "llm_user_tokens_per_day"): 0.0,
                             ("openai", "llm_route_tokens_per_minute"): 0.0,
                             ("openai", "llm_execution_tokens"): 0.8}
