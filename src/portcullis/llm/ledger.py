"""An LLM call's budget from start to end: reserve before sending, settle or release after.

Why one object: the rules that make budgets exact are easy to get subtly wrong at each call site
(settle exactly once; charge the whole reservation when usage is unknown; release when nothing
was sent), and three doors make three call sites. ``LlmLedger`` holds them once; a door calls
``reserve`` before it sends, then exactly one of ``settle`` (an answer came, whole or broken) or
``release`` (nothing reached the provider).

Settlement rule: the provider's usage, priced, when it is known; the whole reservation when it is
not (a stream that broke before its usage event, an answer without ``usage``). Charging less
than the reservation on unknown usage would let a caller who cuts streams short spend without
paying; the reservation is the most the call could have cost, so the budget is never under-charged.
"""

from __future__ import annotations

from dataclasses import dataclass

from portcullis.clock import Clock
from portcullis.llm.estimate import SpendEstimate
from portcullis.llm.route import LlmCaller, LlmRoute, LlmSpend
from portcullis.llm.usage import TokenUsage
from portcullis.stores.base import Reservation, ReservationRefused, ReservationStore

__all__ = ["LlmCharge", "LlmHold", "LlmLedger"]


@dataclass(slots=True)
class LlmHold:
    """One call's reservation. ``reservation`` None: the route has no budgets (nothing held).
    ``left``: per reservation line, what the store said is left after the latest step (reserve,
    then settle or release); empty when it could not tell."""

    estimate: SpendEstimate
    reserved: LlmSpend
    reservation: Reservation | None
    done: bool = False
    left: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class LlmCharge:
    """What a call was charged. ``usage`` None: unknown, the whole reservation was charged."""

    usage: TokenUsage | None
    spend: LlmSpend
    over_reserved: bool  # the provider reported more than was reserved (charged all the same)
    hold_expired: bool  # the reservation had expired before the settlement (a very slow call)
    lost: bool = False  # the shared store was down: the charge never reached it (see ``Settlement.lost``)


class LlmLedger:
    """Reserve, settle and release one route's LLM budgets on a ``ReservationStore``."""

    def __init__(self, route: LlmRoute, store: ReservationStore, clock: Clock) -> None:
        self._route = route
        self._store = store
        self._clock = clock

    async def reserve(self, caller: LlmCaller, estimate: SpendEstimate) -> LlmHold | ReservationRefused:
        """Hold the most ``estimate`` can spend on every budget line, or refuse naming the first that
        cannot hold it. Raises ``StoreUnavailable`` from a store that cannot tell."""
        spend = LlmSpend.of_estimate(estimate)
        lines = self._route.lines(caller, spend)
        if not lines:
            return LlmHold(estimate, spend, None)
        held = await self._store.reserve(lines, self._clock.monotonic(), ttl_s=self._route.reservation_ttl_s)
        if isinstance(held, ReservationRefused):
            return held
        return LlmHold(estimate, spend, held, left=held.left)

    async def settle(self, hold: LlmHold, usage: TokenUsage | None) -> LlmCharge:
        """Charge what the call used (``usage``), or the whole reservation when it is unknown."""
        if hold.done:
            raise RuntimeError("an LLM hold is settled or released once")
        hold.done = True
        spend = hold.reserved if usage is None else LlmSpend.of_usage(usage, hold.estimate.price)
        over = spend.tokens > hold.reserved.tokens or spend.cost_micros > hold.reserved.cost_micros
        if hold.reservation is None:
            return LlmCharge(usage, spend, over, hold_expired=False)
        settlement = await self._store.settle(
            hold.reservation, self._route.amounts(hold.reservation.lines, spend), self._clock.monotonic())
        hold.left = settlement.left
        return LlmCharge(usage, spend, over, settlement.expired, settlement.lost)

    async def release(self, hold: LlmHold) -> None:
        """Give the whole reservation back: the call never reached the provider."""
        if hold.done:
            raise RuntimeError("an LLM hold is settled or released once")
        hold.done = True
        if hold.reservation is not None:
            hold.left = await self._store.release(hold.reservation, self._clock.monotonic())
