"""A shared counter store that survives its own outage: Redis first, a local share when it is down.

Why: a limiter that answers 5xx because Redis is down turns a cache outage into an API outage. When
the shared store fails, each decision falls back to this process's memory store with every limit
divided by ``instances`` (the local share: N instances each admitting limit/N admit about the limit
in total), or, with ``on_failure="closed"``, refuses with a short Retry-After. Either way the
gateway answers; ``degraded`` says so to ``/readyz`` and the metrics.

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
from portcullis.limiting.base import CounterStore
from portcullis.limiting.rules import LimitDecision, LimitRule
from portcullis.stores.memory import MemoryCounterStore

__all__ = ["FailoverCounterStore"]

log = logging.getLogger("portcullis.shared_state")


class FailoverCounterStore:
    """``CounterStore`` over a shared store, with a local fallback and bounded reconnects."""

    def __init__(
        self, shared: CounterStore, clock: Clock, *, instances: int, on_failure: Literal["open", "closed"],
        max_backoff_s: float = 30.0,
    ) -> None:
        if instances < 1:
            raise ValueError("instances must be at least 1")
        self._shared = shared
        self._local = MemoryCounterStore()
        self._clock = clock
        self._instances = instances
        self._on_failure = on_failure
        self._max_backoff = max_backoff_s
        self._backoff = 0.0
        self._retry_at = 0.0
        self._shares: dict[LimitRule, LimitRule] = {}
        self.degraded = False

    async def apply(
        self, hits: Sequence[tuple[LimitRule, str]], now: float, cost: int, *, commit: bool
    ) -> LimitDecision:
        if not self.degraded or self._clock.monotonic() >= self._retry_at:
            try:
                decision = await self._shared.apply(hits, now, cost, commit=commit)
            except (RedisError, OSError) as exc:
                self._failed(exc)
            else:
                self._recovered()
                return decision
        if self._on_failure == "closed":
            return LimitDecision(False, 1.0, "shared_state_unavailable", ())
        return self._local.apply_now([(self._share(rule), subject) for rule, subject in hits], now, cost,
                                     commit=commit)

    async def refund(self, hits: Sequence[tuple[LimitRule, str]], now: float, cost: int) -> None:
        if self.degraded:
            await self._local.refund([(self._share(rule), subject) for rule, subject in hits], now, cost)
            return
        try:
            await self._shared.refund(hits, now, cost)
        except (RedisError, OSError) as exc:
            self._failed(exc)

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
            shared = self._shares[rule] = LimitRule(name=rule.name, windows=tuple(windows), burst=burst)
        return shared

    def _failed(self, exc: BaseException) -> None:
        if not self.degraded:
            log.error("shared state unavailable (%s); limits %s", type(exc).__name__,
                      "use the local share" if self._on_failure == "open" else "refuse")
        self.degraded = True
        self._backoff = min(self._max_backoff, max(0.5, self._backoff * 2))
        self._retry_at = self._clock.monotonic() + self._backoff

    def _recovered(self) -> None:
        if self.degraded:
            log.warning("shared state reachable again")
        self.degraded = False
        self._backoff = 0.0
