"""Egress budget counters for one process: exact, anchored at first use, spent all or nothing; and
when each execution started (``ExecutionClockStore``), for its maximum lifetime.

The reference implementation of ``BudgetCounterStore``; the Redis store is checked against it.
``spend`` never awaits, so one call's check-and-spend cannot interleave with another's on the loop.
"""

from __future__ import annotations

from collections.abc import Sequence

from portcullis.stores.base import Spend

__all__ = ["MemoryBudgetStore"]


class MemoryBudgetStore:
    """Counters for one process: ``key -> (window end, used)``. Expired windows are dropped lazily."""

    def __init__(self, *, max_entries: int = 1_000_000) -> None:
        self._counters: dict[str, tuple[float, int]] = {}
        self._starts: dict[str, tuple[float, float]] = {}  # key -> (started, forgotten at)
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
            counters[item.key] = (end, value + item.amount)
            used.append(value + item.amount)
        if len(counters) > self._max:
            for key in [k for k, (end, _) in counters.items() if end <= now][: len(counters) - self._max]:
                del counters[key]
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
        if entry is not None and entry[1] <= now:
            entry = None
        if entry is None:
            if not start:
                return None
            starts[key] = (now, now + keep_s)
            if len(starts) > self._max:
                for old in [k for k, (_, end) in starts.items() if end <= now][: len(starts) - self._max]:
                    del starts[old]
            return 0.0
        return now - entry[0]
