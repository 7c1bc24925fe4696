"""The maximum wall-clock lifetime of an execution: its first egress call starts the clock.

Why (seed 000 section 2.1, runaway executions): a call cap bounds how much an execution spends, not
for how long. An agent loop that sleeps between calls, or a workflow stuck retrying for a day,
stays under any per-hour budget; a lifetime ends it. Calls after the lifetime are refused with 403
``budget.execution_expired`` (not 429: waiting does not help, and SDKs retry a 429).

The start lives in the budget store (memory, or Redis shared by every instance: the first instance
to see the execution sets it, once) and is remembered for the lifetime plus ``MEMORY_S``; after
that an old execution id would start afresh. Execution ids are chosen by the caller, so this is a
guard against runaway work, not against a caller that mints new ids (the per-workflow and per-user
budgets are). The clock is read as ``Clock.monotonic`` like the budgets' windows (Redis uses its
own clock when it decides).
"""

from __future__ import annotations

from dataclasses import dataclass

from portcullis.clock import Clock
from portcullis.egress.budgets import CallContext
from portcullis.errors import ExecutionExpired
from portcullis.stores.base import ExecutionClockStore

__all__ = ["MEMORY_S", "ExecutionLifetime", "LifetimeDecision"]

MEMORY_S = 86_400.0  # how long past its lifetime an execution's start is remembered


@dataclass(frozen=True, slots=True)
class LifetimeDecision:
    allowed: bool
    age_s: float  # since the execution's first call (0 for a first call or an unknown execution)
    remaining_s: float  # of its lifetime (0 when expired)


class ExecutionLifetime:
    """Checks calls against ``max_lifetime_s`` per execution (keyed by workflow and execution id)."""

    def __init__(self, max_lifetime_s: float, store: ExecutionClockStore, clock: Clock) -> None:
        if max_lifetime_s <= 0:
            raise ValueError("an execution lifetime must be positive")
        self.max_lifetime_s = max_lifetime_s
        self._store = store
        self._clock = clock

    @staticmethod
    def key(ctx: CallContext) -> str:
        return f"life:{ctx.workflow_id}:{ctx.execution_id}"

    async def peek(self, ctx: CallContext) -> LifetimeDecision:
        """The decision a call would get, without starting an execution's clock (for ``validate_only``)."""
        age = await self._store.execution_age(self.key(ctx), self._clock.monotonic(), self._keep_s, start=False)
        return self._decision(age or 0.0)

    async def check(self, ctx: CallContext) -> LifetimeDecision:
        """Start the execution's clock if this is its first call; ``ExecutionExpired`` once it has run out."""
        age = await self._store.execution_age(self.key(ctx), self._clock.monotonic(), self._keep_s)
        decision = self._decision(age or 0.0)
        if not decision.allowed:
            raise ExecutionExpired("execution_expired")
        return decision

    @property
    def _keep_s(self) -> float:
        return self.max_lifetime_s + MEMORY_S

    def _decision(self, age: float) -> LifetimeDecision:
        left = self.max_lifetime_s - age
        return LifetimeDecision(left > 0, age, max(0.0, left))
