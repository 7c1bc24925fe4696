"""Call and cost budgets for egress: per execution, per workflow, per user, per endpoint.

Why exact counters and not the rate limiter's windows: a budget is a hard cap ("this execution may
make 100 calls", "this user may spend 5.00 a day"), where the limiter's sliding window trades
exactness for memory. Each budget here is a counter whose window starts at its first use and
resets ``window_s`` later (Redis ``INCRBY`` + ``EXPIRE`` semantics, so the shared store can do the
same in one script). Every budget a call touches is checked and spent together, all or nothing:
50 parallel calls against a budget of 10 admit exactly 10, and a refusal spends nothing anywhere.

Costs are kept in integer micro-units so that sums are exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from portcullis.clock import Clock
from portcullis.observability.budget_usage import BudgetUsage, budget_subject
from portcullis.stores.base import BudgetCounterStore, Spend
from portcullis.stores.memory_budgets import MemoryBudgetStore

__all__ = [
    "STORE_UNAVAILABLE",
    "BudgetCounterStore",
    "BudgetDecision",
    "BudgetLimits",
    "BudgetPreview",
    "Budgets",
    "CallContext",
    "MemoryBudgetStore",
    "Spend",
]

STORE_UNAVAILABLE = "shared_state"  # the budget named when the counters cannot be reached
_MICRO = 1_000_000
_HOUR = 3600.0
_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling: the execution and workflow named by the caller, the authenticated user."""

    execution_id: str
    workflow_id: str
    user: str


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """``None`` or ``0`` switches a budget off (the config's convention: 0 means unlimited, and only
    when written out; the per-execution call cap defaults to 100)."""

    execution_calls: int | None = 100
    execution_window_s: float = _HOUR
    execution_cost: float | None = None
    workflow_calls_per_hour: int | None = None
    workflow_calls_per_day: int | None = None
    user_calls_per_day: int | None = None
    user_cost_per_day: float | None = None
    endpoint_calls_per_workflow_day: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = [self.execution_calls, self.execution_cost, self.workflow_calls_per_hour,
                  self.workflow_calls_per_day, self.user_calls_per_day, self.user_cost_per_day,
                  *self.endpoint_calls_per_workflow_day.values()]
        if any(v is not None and v < 0 for v in values) or self.execution_window_s <= 0:
            raise ValueError("budgets must not be negative, and the execution window must be positive")


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    allowed: bool
    exhausted: str | None  # the first budget that refused, by name
    remaining: Mapping[str, float]  # per budget, after this call (costs in currency units)
    reset_s: float  # seconds until the exhausted budget resets (0 when allowed)
    burned: float = 0.0  # the share of its tightest budget this call spent (0 to 1), for burn-rate baselines


@dataclass(frozen=True, slots=True)
class BudgetPreview:
    """A budget a call would spend from, read without spending (a ``validate_only`` call)."""

    name: str
    amount: float  # what the call would take (calls, or currency units for costs)
    remaining: float  # what is left before it


class Budgets:
    """Turns a call's context and cost into the counters it must spend from, and spends them."""

    def __init__(self, limits: BudgetLimits, store: BudgetCounterStore, clock: Clock,
                 usage: BudgetUsage | None = None) -> None:
        """``usage``: told what every spend leaves in its counters, for the budget gauges."""
        self._limits = limits
        self._store = store
        self._clock = clock
        self._usage = usage

    def plan(self, ctx: CallContext, route: str, cost: float) -> list[Spend]:
        lim = self._limits
        micro = round(cost * _MICRO)
        e, w, u = ctx.execution_id, ctx.workflow_id, ctx.user
        items = []
        if lim.execution_calls:
            items.append(Spend("execution_calls", f"x:{w}:{e}:calls", lim.execution_calls, lim.execution_window_s, 1))
        if lim.execution_cost:
            items.append(Spend("execution_cost", f"x:{w}:{e}:cost", round(lim.execution_cost * _MICRO),
                               lim.execution_window_s, micro))
        if lim.workflow_calls_per_hour:
            items.append(Spend("workflow_calls_per_hour", f"w:{w}:h", lim.workflow_calls_per_hour, _HOUR, 1))
        if lim.workflow_calls_per_day:
            items.append(Spend("workflow_calls_per_day", f"w:{w}:d", lim.workflow_calls_per_day, _DAY, 1))
        if lim.user_calls_per_day:
            items.append(Spend("user_calls_per_day", f"u:{u}:d", lim.user_calls_per_day, _DAY, 1))
        if lim.user_cost_per_day:
            items.append(Spend("user_cost_per_day", f"u:{u}:cost", round(lim.user_cost_per_day * _MICRO), _DAY, micro))
        endpoint = lim.endpoint_calls_per_workflow_day.get(route)
        if endpoint:
            items.append(Spend(f"endpoint_calls:{route}", f"w:{w}:r:{route}", endpoint, _DAY, 1))
        return items

    async def consume(self, ctx: CallContext, route: str, cost: float = 0.0) -> BudgetDecision:
        items = self.plan(ctx, route, cost)
        if not items:
            return BudgetDecision(True, None, {}, 0.0)
        allowed, refused, used, reset = await self._store.spend(items, self._clock.monotonic())
        if refused == -1:  # the store could not tell (shared state down, failing closed)
            return BudgetDecision(False, STORE_UNAVAILABLE, {}, reset)
        if self._usage is not None:
            subjects = [budget_subject(i.name, ctx.workflow_id, ctx.execution_id, ctx.user) for i in items]
            self._usage.spent(route, items, used, refused, subjects)
        remaining = {item.name: _shown(item, item.limit - u) for item, u in zip(items, used, strict=False)}
        if not allowed:
            assert refused is not None
            return BudgetDecision(False, items[refused].name, remaining, reset)
        burned = max(item.amount / item.limit for item in items)
        return BudgetDecision(True, None, remaining, 0.0, burned)

    def limits_by_route(self, routes: Iterable[str]) -> dict[str, dict[str, float]]:
        """Each route's budgets and their limits (calls, or currency units for costs), for the gauges."""
        probe = CallContext("-", "-", "-")
        return {route: {item.name: _shown(item, item.limit) for item in self.plan(probe, route, 0.0)}
                for route in routes}

    def subject_keys(self, *, workflow_id: str | None = None, execution_id: str | None = None,
                     user: str | None = None) -> list[str]:
        """The counters an operator resets: one execution's (with its workflow), one workflow's
        (its hourly, daily and per-endpoint counts, not its executions'), or one user's."""
        if execution_id is not None:
            if workflow_id is None:
                raise ValueError("an execution is named with its workflow")
            return [f"x:{workflow_id}:{execution_id}:calls", f"x:{workflow_id}:{execution_id}:cost"]
        if workflow_id is not None:
            routes = self._limits.endpoint_calls_per_workflow_day
            return [f"w:{workflow_id}:h", f"w:{workflow_id}:d", *(f"w:{workflow_id}:r:{r}" for r in routes)]
        if user is not None:
            return [f"u:{user}:d", f"u:{user}:cost"]
        raise ValueError("name an execution, a workflow or a user")

    async def reset(self, *, workflow_id: str | None = None, execution_id: str | None = None,
                    user: str | None = None) -> list[str]:
        """Reset one subject's counters (see ``subject_keys``); returns the counters reset."""
        keys = self.subject_keys(workflow_id=workflow_id, execution_id=execution_id, user=user)
        await self._store.reset(keys)
        if self._usage is not None:
            self._usage.forget(keys)
        return keys

    async def remaining(self, ctx: CallContext, route: str) -> dict[str, float]:
        """What is left of every budget a call to ``route`` in ``ctx`` would spend from (nothing spent)."""
        items = self.plan(ctx, route, 0.0)
        used = await self._store.used(items, self._clock.monotonic())
        return {item.name: _shown(item, item.limit - u) for item, u in zip(items, used, strict=True)}


    async def preview(self, ctx: CallContext, route: str, cost: float) -> list[BudgetPreview]:
        """Each budget a call to ``route`` costing ``cost`` would spend from: its amount and what is left."""
        items = self.plan(ctx, route, cost)
        used = await self._store.used(items, self._clock.monotonic()) if items else []
        return [BudgetPreview(item.name, _shown(item, item.amount), _shown(item, item.limit - u))
                for item, u in zip(items, used, strict=True)]


def _shown(item: Spend, left: int) -> float:
    return left / _MICRO if item.name.endswith("cost") or item.name.endswith("cost_per_day") else float(left)
