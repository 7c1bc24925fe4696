"""Egress budget counters for one process: exact, anchored at first use, spent all or nothing; and
when each execution started (``ExecutionClockStore``), for its maximum lifetime.

The reference implementation of ``BudgetCounterStore``; the Redis store is checked against it.
``spend`` never awaits, so one call's check-and-spend cannot interleave with another's on the loop.

Bounded memory, as ``stores/memory.py`` (the rate limiter's counters): a caller names its own
execution ids, so a flood of fresh ones makes two counters a call that live for the execution
window (an hour by default). The tables are kept in least-recently-updated order (``stores.lru``); each call drops a
few of the oldest once their window has ended, and past ``max_entries`` the least recently updated
ones are forgotten, in O(1) per call. Forgetting a live counter forgets its spending (that key
fails open), so the cap is set far above a working set; a counter spent from on every call (a busy
user's or workflow's) is the last to go. The store used to scan every counter on every spend once
over the cap (1.8 ms a spend at 100,000 counters) and never shrink below it: a caller with fresh
execution ids could stall the door and grow memory for an hour.
"""

from __future__ import annotations

from collections.abc import Sequence

from portcullis.stores.base import Spend
from portcullis.stores.lru import LruTable, evict, refresh, sweep

__all__ = ["MemoryBudgetStore"]


class MemoryBudgetStore:
    """Counters for one process: ``key -> (window end, used)``, least recently updated first."""

    def __init__(self, *, max_entries: int = 1_000_000) -> None:
        self._counters: LruTable[str, tuple[float, int]] = LruTable()
        self._starts: LruTable[str, tuple[float, float]] = LruTable()  # key -> (forgotten at, started)
        self._max = max_entries

    async def spend(self, items: Sequence[Spend], now: float) -> tuple[bool, int | None, list[int], float]:
        counters = self._counters
        current: list[tuple[float, int]] = []
        for index, item in enumerate(items):
            entry = counters.get(item.key)
            if entry is None or entry[0] <= now:
                entry = (now + item.window_s, 0)
            if entry[1] + item.amount > item.limit:
                return False, index, [c[1] for c in current] + [entry[1]], entry[0] - now
            current.append(entry)
        used = []
        for item, (end, value) in zip(items, current, strict=True):
            refresh(counters, item.key, (end, value + item.amount))
            used.append(value + item.amount)
        sweep(counters, now)
        evict(counters, self._max)
        return True, None, used, 0.0

    async def used(self, items: Sequence[Spend], now: float) -> list[int]:
        out = []
        for item in items:
            entry = self._counters.get(item.key)
            out.append(0 if entry is None or entry[0] <= now else entry[1])
        return out

    async def reset(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._counters.pop(key, None)

    async def execution_age(self, key: str, now: float, keep_s: float, *, start: bool = True) -> float | None:
        starts = self._starts
        entry = starts.get(key)
        if entry is not None and entry[0] <= now:
            entry = None
        if entry is None:
            if not start:
                return None
            refresh(starts, key, (now + keep_s, now))  # kept in order of start, so oldest first
            sweep(starts, now)
            evict(starts, self._max)
            return 0.0
        return now - entry[1]

