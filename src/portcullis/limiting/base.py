"""The counter store contract: one atomic call decides a whole request against all its limits.

Why the store runs the decision (and not the limiter reading and writing values): with a shared
store, check-then-write from several gateways would over-admit. The memory store runs the pure
algorithms synchronously inside one coroutine step (atomic on the event loop); a Redis store runs
the same arithmetic in one Lua script, one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from portcullis.limiting.rules import LimitDecision, LimitRule

__all__ = ["CounterStore"]


class CounterStore(Protocol):
    async def apply(
        self, hits: Sequence[tuple[LimitRule, str]], now: float, cost: int, *, commit: bool
    ) -> LimitDecision:
        """Check every window of every hit at ``now``; if all allow and ``commit``, consume from all."""
        ...

    async def refund(self, hits: Sequence[tuple[LimitRule, str]], now: float, cost: int) -> None:
        """Give back ``cost`` previously consumed from every window of every hit (never below empty)."""
        ...

    async def aclose(self) -> None:
        """Release resources."""
        ...
