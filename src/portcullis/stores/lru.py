"""Bounded in-memory tables kept least recently updated first: the two steps every memory store takes.

Why shared: the rate limiter's counters, the egress budget counters and execution starts all key on
what a caller chooses (an address, an execution id), so each table must stay bounded in O(1) per
call: a few entries whose time has passed are dropped as calls go by (``sweep``), and past the cap
the least recently updated go first (``evict``). A table is a ``dict`` kept in update order (an
updated entry is popped and re-inserted) whose values start with the monotonic time the entry ends.
"""

from __future__ import annotations

from collections.abc import Hashable, MutableMapping, Sequence
from typing import TypeVar

__all__ = ["SWEEP_PER_CALL", "evict", "sweep"]

SWEEP_PER_CALL = 4

K = TypeVar("K", bound=Hashable)
V = TypeVar("V", bound=Sequence[float])


def sweep(table: MutableMapping[K, V], now: float, most: int = SWEEP_PER_CALL) -> None:
    """Drop up to ``most`` of the oldest entries whose time has passed (stopping at a live one)."""
    for _ in range(most):
        if not table:
            return
        oldest = next(iter(table))
        if table[oldest][0] > now:
            return
        del table[oldest]


def evict(table: MutableMapping[K, V], cap: int) -> None:
    """Past ``cap`` entries, forget the least recently updated (their state with them)."""
    for _ in range(len(table) - cap):
        del table[next(iter(table))]
