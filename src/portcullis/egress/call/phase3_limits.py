"""Phase 3: admission. The execution's lifetime, the endpoint's rate limits, a place in its bulkhead,
then the call's budgets, each spent all or nothing.

Why this order:
- the **lifetime** first: an expired execution is refused before it spends anything (its first
  call starts its clock here);
- **rate limits** before the bulkhead: a call the limit refuses never takes or waits for a place,
  and a limit spends nothing that outlives its window;
- the **bulkhead** (``egress/bulkhead.py``) before the budgets: a call that is shed, or waits and
  times out, must not have cost a budget unit; the place is held until the call is answered, and
  given back here if the budgets then refuse;
- an LLM route's **reservation** (``phase3_llm``) after the bulkhead, so a queued call holds no
  tokens, and before the call budgets, so a call refused for its tokens spends no call unit (one
  the call budgets refuse gives its reservation back);
- **budgets** last, from the counters of the call's run mode (a test run's are its own).

An emergency factor (an incident control on the route or the user) scales the rate limit down,
read from the in-memory snapshot (no I/O). ``preview`` answers the same questions for a
``validate_only`` call without spending, starting or waiting for anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from portcullis.clock import Clock
from portcullis.config.egress import path_matches
from portcullis.controls.service import IncidentControls
from portcullis.egress.budgets import STORE_UNAVAILABLE, BudgetDecision, Budgets, CallContext
from portcullis.egress.bulkhead import Permit
from portcullis.egress.call.phase1_destination import Destination
from portcullis.egress.lifetime import ExecutionLifetime
from portcullis.egress.priority import PRIORITY_HEADER
from portcullis.egress.run_mode import PlannedCheck, PlannedSpend
from portcullis.errors import BudgetExhausted, ErrorCode, RateLimited, StoreUnavailable
from portcullis.http.headers import fold_name
from portcullis.limiting.limiter import MultiLimiter
from portcullis.stores.failover import OUTAGE_RETRY_S

__all__ = ["Admission", "LimitsPhase", "Preview"]


@dataclass(slots=True)  # not frozen: made per call, and a frozen init costs four times as much
class Admission:
    """What the call was charged: the budgets' answer, the cost it spent, and its bulkhead place."""

    budget: BudgetDecision
    cost: float
    permit: Permit | None = None  # released when the call is answered (None: the route has no bulkhead)


@dataclass(frozen=True, slots=True)
class Preview:
    """What admission would decide, with nothing spent: for a ``validate_only`` answer."""

    checks: tuple[PlannedCheck, ...]
    spends: tuple[PlannedSpend, ...]


class LimitsPhase:
    def __init__(self, *, limiter: MultiLimiter, budgets: Budgets, controls: IncidentControls | None,
                 clock: Clock, lifetime: ExecutionLifetime | None = None) -> None:
        self._limiter = limiter
        self._budgets = budgets
        self._controls = controls
        self._clock = clock
        self._lifetime = lifetime

    async def admit(self, destination: Destination, context: CallContext, *,
                    reserve: Callable[[], Awaitable[object]] | None = None) -> Admission:
        """``reserve``: an LLM route's token and cost reservation, taken once the call has its place."""
        route = destination.route
        cfg = route.config
        if self._lifetime is not None:
            try:
                await self._lifetime.check(context)
            except StoreUnavailable:
                # As the budgets do when their counters cannot be reached: refuse, and say why.
                raise BudgetExhausted(f"budget:{STORE_UNAVAILABLE}", retry_after_s=OUTAGE_RETRY_S) from None
        if route.rate_rule is not None:
            subject = context.workflow_id if cfg.rate_limit_per_workflow else "*"
            factor = 1.0
            if self._controls is not None and self._controls.snapshot.has_emergencies:
                factor = self._controls.snapshot.factor(cfg.name, context.user, self._clock.wall())
            decision = await self._limiter.consume([(route.rate_rule, subject)], factor=factor)
            if not decision.allowed:
                raise RateLimited(f"rate_limited:{route.rate_rule.name}", retry_after_s=decision.retry_after_s)
        permit = None
        if route.bulkhead is not None:
            # Shed propagates: nothing is spent yet.
            permit = await route.bulkhead.acquire(_priority(destination, context))
        try:
            if reserve is not None:
                await reserve()
            cost = self._cost(destination)
            budget = await self._budgets.consume(destination.mode.budget_context(context), cfg.name, cost)
            if not budget.allowed:
                raise BudgetExhausted(f"budget:{budget.exhausted}", retry_after_s=budget.reset_s or None)
        except BaseException:
            if permit is not None:
                permit.release()
            raise
        return Admission(budget, cost, permit)

    async def preview(self, destination: Destination, context: CallContext) -> Preview:
        """The lifetime, the rate limit and the budgets as the call would meet them; nothing spent."""
        route = destination.route
        checks: list[PlannedCheck] = []
        spends: list[PlannedSpend] = []
        if self._lifetime is not None:
            try:
                alive = (await self._lifetime.peek(context)).allowed
                checks.append(PlannedCheck("execution_lifetime", alive, None if alive else ErrorCode.EXECUTION_EXPIRED))
            except StoreUnavailable:
                checks.append(PlannedCheck("execution_lifetime", False, ErrorCode.BUDGET_EXHAUSTED))
        if route.rate_rule is not None:
            subject = context.workflow_id if route.config.rate_limit_per_workflow else "*"
            decision = await self._limiter.peek([(route.rate_rule, subject)])
            spends.append(PlannedSpend(route.rate_rule.name, 1, None, decision.allowed))
        bulkhead = route.bulkhead
        if bulkhead is not None:
            _priority(destination, context)  # a class the route refuses is refused here too
            room = bulkhead.in_use < bulkhead.config.max_concurrent or bulkhead.depth() < bulkhead.config.max_queue
            checks.append(PlannedCheck("bulkhead", room, None if room else ErrorCode.EGRESS_SHED))
        cost = self._cost(destination)
        previews = await self._budgets.preview(destination.mode.budget_context(context), route.name, cost)
        spends += [PlannedSpend(p.name, p.amount, p.remaining, p.amount <= p.remaining) for p in previews]
        return Preview(tuple(checks), tuple(spends))

    @staticmethod
    def _cost(destination: Destination) -> float:
        cfg = destination.route.config
        method, path = destination.method, destination.relative_path
        return next((r.cost for r in cfg.costs if path_matches(r.path, path)
                     and (not r.methods or method in r.methods)), cfg.cost)


_PRIORITY = PRIORITY_HEADER.encode()


def _priority(destination: Destination, context: CallContext) -> str:
    """The call's class in its route's bulkhead (``egress/priority.py``)."""
    asked = [v.decode("latin-1") for k, v in destination.caller if fold_name(k) == _PRIORITY]  # X_Priority too
    return destination.route.priority.of(workflow_id=context.workflow_id, consumer=context.user, header_values=asked)
