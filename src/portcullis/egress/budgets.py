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

from collections import OrderedDict
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
    "budget_amount",
]

STORE_UNAVAILABLE = "shared_state"  # the budget named when the counters cannot be reached
_MICRO = 1_000_000
_HOUR = 3600.0
_DAY = 86400.0
_COST_BUDGETS = frozenset({"execution_cost", "user_cost_per_day"})  # kept in micros; the rest count calls
_MAX_ROUTES = 4096  # routes whose budget lines are kept (a route's are worked out again past that)
_MAX_PLANS = 4096  # recent callers' counter lists kept (the oldest is dropped past that)


@dataclass(slots=True)  # not frozen: made per call, and a frozen init costs four times as much
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


@dataclass(slots=True)  # not frozen: made per call, and a frozen init costs four times as much
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
        self._lines: dict[str, tuple[_Line, ...]] = {}  # route -> the budgets its calls spend from
        # (route, workflow, execution, user, cost) -> its counters: an execution's calls spend from
        # the same ones call after call, so their keys are built once, not seven strings a call.
        self._plans: OrderedDict[tuple[str, str, str, str, int], tuple[Spend, ...]] = OrderedDict()

    def plan(self, ctx: CallContext, route: str, cost: float) -> tuple[Spend, ...]:
        """The counters a call to ``route`` in ``ctx`` costing ``cost`` spends from, in a fixed order."""
        micro = round(cost * _MICRO)
        key = (route, ctx.workflow_id, ctx.execution_id, ctx.user, micro)
        plans = self._plans
        found = plans.get(key)
        if found is not None:
            return found
        lines = self._lines.get(route)
        if lines is None:
            lines = self._lines_of(route)
        prefixes = {"x": f"x:{ctx.workflow_id}:{ctx.execution_id}", "w": f"w:{ctx.workflow_id}", "u": f"u:{ctx.user}"}
        found = tuple(Spend(line.name, prefixes[line.kind] + line.suffix, line.limit, line.window_s,
                            micro if line.is_cost else 1) for line in lines)
        if len(plans) >= _MAX_PLANS:
            plans.popitem(last=False)  # the oldest: O(1), however many fresh ids a caller makes up
        plans[key] = found
        return found

    def _lines_of(self, route: str) -> tuple[_Line, ...]:
        """The budgets a route's calls spend from: fixed by the config, so worked out once per route."""
        lim = self._limits
        lines = []
        if lim.execution_calls:
            lines.append(_Line("execution_calls", "x", ":calls", lim.execution_calls, lim.execution_window_s))
        if lim.execution_cost:
            lines.append(_Line("execution_cost", "x", ":cost", round(lim.execution_cost * _MICRO),
                               lim.execution_window_s, is_cost=True))
        if lim.workflow_calls_per_hour:
            lines.append(_Line("workflow_calls_per_hour", "w", ":h", lim.workflow_calls_per_hour, _HOUR))
        if lim.workflow_calls_per_day:
            lines.append(_Line("workflow_calls_per_day", "w", ":d", lim.workflow_calls_per_day, _DAY))
        if lim.user_calls_per_day:
            lines.append(_Line("user_calls_per_day", "u", ":d", lim.user_calls_per_day, _DAY))
        if lim.user_cost_per_day:
            lines.append(_Line("user_cost_per_day", "u", ":cost", round(lim.user_cost_per_day * _MICRO), _DAY,
                               is_cost=True))
        endpoint = lim.endpoint_calls_per_workflow_day.get(route)
        if endpoint:
            lines.append(_Line(f"endpoint_calls:{route}", "w", f":r:{route}", endpoint, _DAY))
        found = tuple(lines)
        if len(self._lines) < _MAX_ROUTES:
            self._lines[route] = found
        return found

    async def consume(self, ctx: CallContext, route: str, cost: float = 0.0) -> BudgetDecision:
        items = self.plan(ctx, route, cost)
        if not items:
            return BudgetDecision(True, None, {}, 0.0)
        allowed, refused, used, reset = await self._store.spend(items, self._clock.monotonic())
        if refused == -1:  # the store could not tell (shared state down, failing closed)
            return BudgetDecision(False, STORE_UNAVAILABLE, {}, reset)
        if self._usage is not None:
            self._usage.spent(route, items, used, refused,
                              lambda i: budget_subject(items[i].name, ctx.workflow_id, ctx.execution_id, ctx.user))
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


def budget_amount(left: float) -> str:
    """What is left of a budget as a caller reads it: calls as whole numbers (exactly, however many:
    ``:g`` would say ``1e+06``), a cost in currency units with up to six decimals (its micro units)."""
    if left.is_integer():
        return str(int(left))
    return f"{left:.6f}".rstrip("0")


@dataclass(frozen=True, slots=True)
class _Line:
    """One budget a route's calls spend from: its counter key is ``<subject prefix><suffix>``."""

    name: str
    kind: str  # whose counter: "x" the execution, "w" the workflow, "u" the user
    suffix: str
    limit: int  # calls, or micro currency units for a cost
    window_s: float
    is_cost: bool = False


def _shown(item: Spend, left: int) -> float:
    """What is left as callers read it: calls, or currency units for a cost budget (kept in micros)."""
    return left / _MICRO if item.name in _COST_BUDGETS else float(left)
