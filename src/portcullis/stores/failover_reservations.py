"""Reservations over a shared store that may be down: refuse (the default), or hold from a local share.

Why closed by default: a reservation budget is money or a provider's quota; local counters that
start from zero during an outage would let every instance spend the whole budget again. ``open``
divides each line's limit among ``instances`` and holds from this process's memory, as
``FailoverBudgetStore`` does for call budgets. A refusal for the outage has ``index`` -1 and names
the budget ``shared_state`` (the 503/429 the caller renders says budgets fail closed).

A reservation made locally is settled and released locally (it carries the local store's id, which
the shared store does not know), so a recovery in the middle of a call charges the right place.
Shares one ``Outage`` with the other shared stores, so ``/readyz`` sees one state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from portcullis.errors import StoreUnavailable
from portcullis.stores.base import BudgetLine, LineUsage, Reservation, ReservationRefused, ReservationStore, Settlement
from portcullis.stores.failover import OUTAGE_RETRY_S, Outage
from portcullis.stores.memory_reservations import MemoryReservationStore

__all__ = ["SHARED_STATE", "FailoverReservationStore"]

SHARED_STATE = "shared_state"
_LOCAL = "local:"


class FailoverReservationStore:
    """``ReservationStore`` over a shared one, with a closed (or local-share) fallback."""

    def __init__(self, shared: ReservationStore, outage: Outage, *, instances: int,
                 on_failure: Literal["open", "closed"] = "closed") -> None:
        if instances < 1:
            raise ValueError("instances must be at least 1")
        self._shared = shared
        self._local = MemoryReservationStore()
        self._instances = instances
        self._on_failure = on_failure
        self.outage = outage

    async def reserve(
        self, lines: Sequence[BudgetLine], now: float, *, ttl_s: float,
    ) -> Reservation | ReservationRefused:
        if self.outage.should_try():
            try:
                answer = await self._shared.reserve(lines, now, ttl_s=ttl_s)
            except StoreUnavailable as exc:
                self.outage.failed(exc)
            else:
                self.outage.recovered()
                return answer
        if self._on_failure == "closed":
            return ReservationRefused(-1, SHARED_STATE, 0, OUTAGE_RETRY_S)
        local = await self._local.reserve(self._shares(lines), now, ttl_s=ttl_s)
        if isinstance(local, Reservation):
            return replace(local, reservation_id=_LOCAL + local.reservation_id, lines=tuple(lines))
        return local

    async def settle(self, reservation: Reservation, actual: Sequence[int], now: float) -> Settlement:
        if reservation.reservation_id.startswith(_LOCAL):
            return await self._local.settle(self._as_local(reservation), actual, now)
        try:
            return await self._shared.settle(reservation, actual, now)
        except StoreUnavailable as exc:
            # The charge is lost with the outage; the shared hold expires at its ttl (never under it).
            self.outage.failed(exc)
            return Settlement(tuple(actual), expired=False, left=(), lost=True)

    async def release(self, reservation: Reservation, now: float) -> tuple[int, ...]:
        if reservation.reservation_id.startswith(_LOCAL):
            return await self._local.release(self._as_local(reservation), now)
        try:
            return await self._shared.release(reservation, now)
        except StoreUnavailable as exc:
            self.outage.failed(exc)  # the hold expires at its ttl
            return ()

    async def usage(self, lines: Sequence[BudgetLine], now: float) -> list[LineUsage]:
        if self.outage.should_try():
            try:
                return await self._shared.usage(lines, now)
            except StoreUnavailable as exc:
                self.outage.failed(exc)
        return await self._local.usage(self._shares(lines), now)

    async def reset(self, keys: Sequence[str]) -> None:
        await self._local.reset(keys)
        try:
            await self._shared.reset(keys)
        except StoreUnavailable as exc:
            self.outage.failed(exc)
            raise StoreUnavailable("shared state unavailable: the budget reset reached this instance only") from exc

    def _shares(self, lines: Sequence[BudgetLine]) -> list[BudgetLine]:
        n = self._instances
        return [replace(line, limit=max(1, line.limit // n)) if n > 1 else line for line in lines]

    def _as_local(self, reservation: Reservation) -> Reservation:
        return replace(reservation, reservation_id=reservation.reservation_id.removeprefix(_LOCAL),
                       lines=tuple(self._shares(reservation.lines)))
