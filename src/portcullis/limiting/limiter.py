"""MultiLimiter: all-or-nothing consumption of every limit a request hits, in one store call.

Why all-or-nothing: a request refused by the hourly window must not spend from the per-second one,
otherwise a refused client is punished twice and the short window's count stops meaning anything.
Time comes from the injected clock (``monotonic``), never from ``time``.

An emergency ``factor`` below 1 (``limiting/emergency.py``) scales every rule of the decision
before the store sees it (``limiting/scaling.py``): the same counters, judged against smaller limits.
"""

from __future__ import annotations

from collections.abc import Sequence

from portcullis.clock import Clock
from portcullis.limiting.base import CounterStore
from portcullis.limiting.rules import LimitDecision, LimitRule, QuotaState
from portcullis.limiting.scaling import ScaledRules

__all__ = ["LimitDecision", "LimitRule", "MultiLimiter", "QuotaState"]


class MultiLimiter:
    def __init__(self, store: CounterStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._scaled = ScaledRules()

    @property
    def store(self) -> CounterStore:
        return self._store

    async def consume(
        self, hits: Sequence[tuple[LimitRule, str]], cost: int = 1, *, factor: float = 1.0
    ) -> LimitDecision:
        """Admit and spend from every hit, or refuse and spend nothing. ``factor`` < 1: every limit
        scaled down by it (an emergency limit)."""
        if factor < 1.0:
            hits = self._scaled.hits(hits, factor)
        return await self._store.apply(hits, self._clock.monotonic(), cost, commit=True)

    async def refund(self, hits: Sequence[tuple[LimitRule, str]], cost: int = 1) -> None:
        """Give back what an earlier ``consume`` reserved (a reservation that turned out unneeded)."""
        await self._store.refund(hits, self._clock.monotonic(), cost)

    async def peek(self, hits: Sequence[tuple[LimitRule, str]], cost: int = 1) -> LimitDecision:
        """Would ``consume`` admit this now? Spends nothing (the pre-auth shield's question)."""
        return await self._store.apply(hits, self._clock.monotonic(), cost, commit=False)
