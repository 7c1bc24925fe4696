"""A shared counter store that survives its own outage: Redis first, a local share when it is down.

Why: a limiter that answers 5xx because Redis is down turns a cache outage into an API outage. When
the shared store fails, each decision falls back to this process's memory store with every limit
divided by ``instances`` (the local share: N instances each admitting limit/N admit about the limit
in total), or, with ``on_failure="closed"``, refuses with a short Retry-After (a rule's own
``on_store_failure`` overrides the default; one closed rule in a decision refuses it). Either way
the gateway answers; ``degraded`` says so to ``/readyz`` and the metrics.

Budgets (``FailoverBudgetStore``) take the same path with their own rule, closed by default: a
budget is money or a provider quota, and local counters starting from zero during an outage could
spend a day's budget again.

Reconnects are bounded: after a failure the shared store is not tried again for a backoff that
doubles up to ``max_backoff_s``, so a dead Redis costs one failed call per backoff, not one per
request. The first success clears the backoff. Give the Redis client no retries of its own
(``retry=Retry(NoBackoff(), 0)``): redis-py's default retries with backoff would hold every request
for seconds before this store could fall back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from redis.exceptions import RedisError

from portcullis.clock import Clock
from portcullis.errors import StoreUnavailable
from portcullis.limiting.base import CounterStore
from portcullis.limiting.rules import LimitDecision, LimitRule
from portcullis.stores.base import EgressStateStore, Spend
from portcullis.stores.memory import MemoryCounterStore
from portcullis.stores.memory_budgets import MemoryBudgetStore

__all__ = ["OUTAGE_RETRY_S", "FailoverBudgetStore", "FailoverCounterStore", "Outage"]

log = logging.getLogger("portcullis.shared_state")

# What a refusal for an unreachable shared store tells the caller to wait (its Retry-After): longer
# than the first reconnect backoff, short enough that callers come back soon after Redis does.
OUTAGE_RETRY_S = 1.0


class Outage:
    """Whether the shared store is down, and when to try it again (one per Redis, shared by the
    counter and budget stores, so ``/readyz`` and the metric see one state)."""

    def __init__(self, clock: Clock, *, max_backoff_s: float = 30.0) -> None:
        self._clock = clock
        self._max_backoff = max_backoff_s
        self._backoff = 0.0
        self._retry_at = 0.0
        self.degraded = False

    def should_try(self) -> bool:
        """Healthy, or degraded and the backoff has passed: ask the shared store."""
        return not self.degraded or self._clock.monotonic() >= self._retry_at

    def failed(self, exc: BaseException) -> None:
        now = self._clock.monotonic()
        if self.degraded and now < self._retry_at:
            return  # another caller of the same attempt (one batch fails all its callers): counted once
        if not self.degraded:
            log.error("shared state unavailable (%s); limits and budgets follow their on_failure rule",
                      type(exc).__name__)
        self.degraded = True
        self._backoff = min(self._max_backoff, max(0.5, self._backoff * 2))
        self._retry_at = now + self._backoff

    def recovered(self) -> None:
        if self.degraded:
            log.warning("shared state reachable again")
        self.degraded = False
        self._backoff = 0.0


class FailoverCounterStore:
    """``CounterStore`` over a shared store, with a local fallback and bounded reconnects."""

    def __init__(
        self, shared: CounterStore, clock: Clock, *, instances: int, on_failure: Literal["open", "closed"],
        max_backoff_s: float = 30.0, outage: Outage | None = None,
    ) -> None:
        if instances < 1:
            raise ValueError("instances must be at least 1")
        self._shared = shared
        self._local = MemoryCounterStore()
        self._instances = instances
        self._on_failure = on_failure
        self.outage = outage or Outage(clock, max_backoff_s=max_backoff_s)
        self._shares: dict[LimitRule, LimitRule] = {}

    @property
    def degraded(self) -> bool:
        return self.outage.degraded

    async def apply(
        self, hits: Sequence[tuple[LimitRule, str]], now: float, cost: int, *, commit: bool
    ) -> LimitDecision:
        outage = self.outage
        if outage.should_try():
            try:
                decision = await self._shared.apply(hits, now, cost, commit=commit)
            except (RedisError, OSError) as exc:
                outage.failed(exc)
            else:
                outage.recovered()
                return decision
        for rule, _ in hits:
            if (rule.on_store_failure or self._on_failure) == "closed":
                return LimitDecision(False, OUTAGE_RETRY_S, "shared_state_unavailable", ())
        return self._local.apply_now([(self._share(rule), subject) for rule, subject in hits], now, cost,
                                     commit=commit)

    async def refund(self, hits: Sequence[tuple[LimitRule, str]], now: float, cost: int) -> None:
        if self.outage.degraded:
            await self._local.refund([(self._share(rule), subject) for rule, subject in hits], now, cost)
            return
        try:
            await self._shared.refund(hits, now, cost)
        except (RedisError, OSError) as exc:
            self.outage.failed(exc)

    async def aclose(self) -> None:
        await self._shared.aclose()
        await self._local.aclose()

    def _share(self, rule: LimitRule) -> LimitRule:
        """The rule with every window's limit divided among the instances (at least 1)."""
        shared = self._shares.get(rule)
        if shared is None:
            n = self._instances
            windows = [replace(w, limit=max(1, w.limit // n)) for w in rule.windows]
            burst = max(1, rule.burst // n) if rule.burst is not None else None
            shared = self._shares[rule] = LimitRule(name=rule.name, windows=tuple(windows), burst=burst,
                                                    on_store_failure=rule.on_store_failure)
        return shared


class FailoverBudgetStore:
    """``BudgetCounterStore`` over a shared store. Down: refuse (``closed``, the default for
    budgets) or spend from a local share (``open``: each budget's cap divided among the instances).
    A refusal for the outage names the budget ``shared_state`` and asks for a retry in 1 s."""

    def __init__(
        self, shared: EgressStateStore, outage: Outage, *, instances: int, on_failure: Literal["open", "closed"],
    ) -> None:
        if instances < 1:
            raise ValueError("instances must be at least 1")
        self._shared = shared
        self._local = MemoryBudgetStore()
        self._instances = instances
        self._on_failure = on_failure
        self.outage = outage

    async def spend(self, items: Sequence[Spend], now: float) -> tuple[bool, int | None, list[int], float]:
        outage = self.outage
        if outage.should_try():
            try:
                answer = await self._shared.spend(items, now)
            except (RedisError, OSError) as exc:
                outage.failed(exc)
            else:
                outage.recovered()
                return answer
        if self._on_failure == "closed":
            return False, -1, [0] * len(items), OUTAGE_RETRY_S
        return await self._local.spend(self._shares(items), now)

    async def used(self, items: Sequence[Spend], now: float) -> list[int]:
        if self.outage.should_try():
            try:
                return await self._shared.used(items, now)
            except (RedisError, OSError) as exc:
                self.outage.failed(exc)
        return await self._local.used(self._shares(items), now)

    async def reset(self, keys: Sequence[str]) -> None:
        """Both the shared counters and this process's local shares; a shared store that is down
        raises ``StoreUnavailable``, so the operator learns the reset did not reach it."""
        await self._local.reset(keys)
        try:
            await self._shared.reset(keys)
        except (RedisError, OSError) as exc:
            self.outage.failed(exc)
            raise StoreUnavailable("shared state unavailable: the budget reset reached this instance only") from exc

    async def execution_age(self, key: str, now: float, keep_s: float, *, start: bool = True) -> float | None:
        """The shared start; down: this process's own (``open``) or ``StoreUnavailable`` (``closed``):
        a lifetime restarting at zero on every instance during an outage would be no lifetime."""
        if self.outage.should_try():
            try:
                age = await self._shared.execution_age(key, now, keep_s, start=start)
            except (RedisError, OSError) as exc:
                self.outage.failed(exc)
            else:
                self.outage.recovered()
                return age
        if self._on_failure == "closed":
            raise StoreUnavailable("shared state unavailable: execution lifetimes cannot be checked")
        return await self._local.execution_age(key, now, keep_s, start=start)

    def _shares(self, items: Sequence[Spend]) -> list[Spend]:
        n = self._instances
        return [i._replace(limit=max(1, i.limit // n)) if n > 1 else i for i in items]
