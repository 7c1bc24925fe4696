"""Budget reservations for one process: the reference ``ReservationStore`` the Redis one is checked against.

No method awaits before it has decided and written, so one reservation's check-and-hold cannot
interleave with another's on the event loop: that alone makes it exact under asyncio concurrency.
Expired holds are dropped lazily, from a heap per line ordered by expiry, before each check.

Bounded memory (as ``memory_budgets.py``): lines are kept least recently used first; each
reservation drops a few of the oldest once they hold nothing and their window has ended, and past
``max_lines`` the least recently used lines that hold nothing in flight are forgotten, in O(1) per
call (the table is a ``stores.lru`` table: its oldest line is found in O(1)), their spending with
them (that line fails open, so the cap is far above a working set). A line a call in flight holds
part of is never forgotten. This replaced a scan of every line on
every reservation past the cap, which a caller naming fresh execution ids could trigger at will.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

from portcullis.ids import random_hex
from portcullis.stores.base import BudgetLine, LineUsage, Reservation, ReservationRefused, Settlement
from portcullis.stores.lru import LruTable, refresh

__all__ = ["MemoryReservationStore"]


_SWEEP_PER_CALL = 4
_EVICT_TRIES = 16  # lines with holds passed over per call before the table may stand over its cap


@dataclass(slots=True)
class _Line:
    used: int = 0
    window_end: float | None = None  # None: no window started (or a lifetime total)
    reserved: int = 0
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)  # id -> (amount, expiry)
    expiries: list[tuple[float, str]] = field(default_factory=list)  # heap; settled holds' entries are stale

    def purge(self, now: float) -> None:
        expiries = self.expiries
        while expiries and expiries[0][0] <= now:
            _, rid = heapq.heappop(expiries)
            hold = self.holds.pop(rid, None)
            if hold is not None:
                self.reserved -= hold[0]

    def current_used(self, window_s: float | None, now: float) -> tuple[int, float | None]:
        """Used in the current window and its end (a new window if the old one ended)."""
        if window_s is None:
            return self.used, None
        if self.window_end is None or self.window_end <= now:
            return 0, now + window_s
        return self.used, self.window_end

    def left(self, line: BudgetLine, now: float) -> int:
        """What another call could reserve from this line now (limit - used - reserved, at least 0)."""
        return max(0, line.limit - self.current_used(line.window_s, now)[0] - self.reserved)

    def hold(self, rid: str, amount: int, expires: float) -> None:
        self.reserved += amount
        self.holds[rid] = (amount, expires)
        heapq.heappush(self.expiries, (expires, rid))

    def end_hold(self, rid: str) -> bool:
        hold = self.holds.pop(rid, None)
        if hold is None:
            return False
        self.reserved -= hold[0]
        if len(self.expiries) > 2 * len(self.holds) + 64:  # mostly settled holds' entries: rebuild
            self.expiries = [(expiry, r) for r, (_, expiry) in self.holds.items()]
            heapq.heapify(self.expiries)
        return True


class MemoryReservationStore:
    """``ReservationStore`` in this process's memory."""

    def __init__(self, *, max_lines: int = 1_000_000) -> None:
        self._lines: LruTable[str, _Line] = LruTable()
        self._max = max_lines

    async def reserve(
        self, lines: Sequence[BudgetLine], now: float, *, ttl_s: float,
    ) -> Reservation | ReservationRefused:
        if ttl_s <= 0:
            raise ValueError("a reservation's ttl must be positive")
        table = self._lines
        states: list[tuple[_Line, int, float | None]] = []
        for index, line in enumerate(lines):
            state = table.get(line.key) or _Line()
            state.purge(now)
            used, end = state.current_used(line.window_s, now)
            if used + state.reserved + line.amount > line.limit:
                reset = None if end is None else end - now
                return ReservationRefused(index, line.name, max(0, line.limit - used - state.reserved), reset)
            states.append((state, used, end))
        rid = random_hex(64)
        expires = now + ttl_s
        for line, (state, used, end) in zip(lines, states, strict=True):
            state.used, state.window_end = used, end
            state.hold(rid, line.amount, expires)
            refresh(table, line.key, state)  # the most recently used
        left = tuple(state.left(line, now) for line, (state, _, _) in zip(lines, states, strict=True))
        self._bound(now)
        return Reservation(rid, tuple(lines), expires, left)

    async def settle(self, reservation: Reservation, actual: Sequence[int], now: float) -> Settlement:
        if len(actual) != len(reservation.lines) or any(a < 0 for a in actual):
            raise ValueError("settle takes one non-negative amount per line")
        expired = False
        left = []
        for line, amount in zip(reservation.lines, actual, strict=True):
            state = self._lines.setdefault(line.key, _Line())
            state.purge(now)
            if not state.end_hold(reservation.reservation_id):
                expired = True
            if amount:
                used, end = state.current_used(line.window_s, now)
                state.used, state.window_end = used + amount, end
            left.append(state.left(line, now))
        return Settlement(tuple(actual), expired, tuple(left))

    async def release(self, reservation: Reservation, now: float) -> tuple[int, ...]:
        left = []
        for line in reservation.lines:
            state = self._lines.get(line.key)
            if state is None:
                left.append(line.limit)  # forgotten (reset or evicted): nothing used, nothing held
                continue
            state.purge(now)
            state.end_hold(reservation.reservation_id)
            left.append(state.left(line, now))
        return tuple(left)

    async def usage(self, lines: Sequence[BudgetLine], now: float) -> list[LineUsage]:
        out = []
        for line in lines:
            state = self._lines.get(line.key)
            if state is None:
                out.append(LineUsage(0, 0))
                continue
            state.purge(now)
            out.append(LineUsage(state.current_used(line.window_s, now)[0], state.reserved))
        return out

    async def reset(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._lines.pop(key, None)

    def _bound(self, now: float) -> None:
        table = self._lines
        for _ in range(_SWEEP_PER_CALL):
            if not table:
                return
            oldest = next(iter(table))
            state = table[oldest]
            state.purge(now)
            if state.holds or not (state.used == 0 or (state.window_end is not None and state.window_end <= now)):
                break
            del table[oldest]
        over, skipped = len(table) - self._max, 0
        while over > 0 and skipped < _EVICT_TRIES:
            oldest, state = table.popitem(last=False)
            if state.holds:  # a call in flight holds part of it: kept, as the most recent
                table[oldest] = state
                skipped += 1
            else:
                over -= 1
