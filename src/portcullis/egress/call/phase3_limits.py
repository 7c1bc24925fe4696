"""Phase 3: the endpoint's rate limits, then the call's budgets, each spent all or nothing.

Why limits before budgets: a rate limit refuses without spending anything that outlives its
window, while a budget is money or quota for the day; a call refused by the limit must not have
cost a budget unit. An emergency factor (an incident control on the route or the user) scales the
limit down, read from the in-memory snapshot (no I/O).
"""

from __future__ import annotations

from dataclasses import dataclass

from portcullis.clock import Clock
from portcullis.config.egress import path_matches
from portcullis.controls.service import IncidentControls
from portcullis.egress.budgets import BudgetDecision, Budgets, CallContext
from portcullis.egress.call.phase1_destination import Destination
from portcullis.errors import BudgetExhausted, RateLimited
from portcullis.limiting.limiter import MultiLimiter

__all__ = ["Admission", "LimitsPhase"]


@dataclass(frozen=True, slots=True)
class Admission:
    """What the call was charged: the budgets' answer and the cost it spent from them."""

    budget: BudgetDecision
    cost: float


class LimitsPhase:
    def __init__(self, *, limiter: MultiLimiter, budgets: Budgets, controls: IncidentControls | None,
                 clock: Clock) -> None:
        self._limiter = limiter
        self._budgets = budgets
        self._controls = controls
        self._clock = clock

    async def admit(self, destination: Destination, context: CallContext) -> Admission:
        await self.rate_limit(destination, context)
        return await self.spend(destination, context)

    async def rate_limit(self, destination: Destination, context: CallContext) -> None:
        """The endpoint's rate limits (an LLM route reserves its tokens between this and ``spend``)."""
        route = destination.route
        cfg = route.config
        if route.rate_rule is not None:
            subject = context.workflow_id if cfg.rate_limit_per_workflow else "*"
            factor = 1.0
            if self._controls is not None and self._controls.snapshot.has_emergencies:
                factor = self._controls.snapshot.factor(cfg.name, context.user, self._clock.wall())
            decision = await self._limiter.consume([(route.rate_rule, subject)], factor=factor)
            if not decision.allowed:
                raise RateLimited(f"rate_limited:{route.rate_rule.name}", retry_after_s=decision.retry_after_s)

    async def spend(self, destination: Destination, context: CallContext) -> Admission:
        """The call budgets, all or nothing."""
        cfg = destination.route.config
        method, path = destination.method, destination.relative_path
        cost = next((r.cost for r in cfg.costs if path_matches(r.path, path)
                     and (not r.methods or method in r.methods)), cfg.cost)
        budget = await self._budgets.consume(context, cfg.name, cost)
        if not budget.allowed:
            raise BudgetExhausted(f"budget:{budget.exhausted}")
        return Admission(budget, cost)
