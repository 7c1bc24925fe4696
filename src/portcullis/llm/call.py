"""One LLM call through a route, before and after sending: the phase a door's call path runs.

Why a single object per call: the steps have an order that budgets depend on (parse once, screen,
estimate, reserve, send the gateway's own body; then exactly one of settle-from-JSON,
settle-when-the-stream-ends, or release), and every door (the HTTP door, the in-process transport,
the proxy) must run the same steps the same way. ``LlmCalls.prepare`` does the before;
``PreparedCall`` the after.

Settlement rules by answer (see ``ledger`` for why unknown usage charges the whole reservation):

- a JSON answer with ``usage``: that usage, priced;
- a 2xx JSON answer without a readable ``usage``: the whole reservation;
- a non-2xx answer without ``usage`` (the provider refused or failed the request): nothing, as
  providers do not bill a request they reject;
- a streamed answer (``text/event-stream``, or any 2xx answer to a request that asked
  ``stream: true``): settled by ``LlmStream``'s end, with the usage the stream reported;
- nothing sent (refused after the reservation, connection never made): released.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson

from portcullis.clock import Clock
from portcullis.llm.estimate import LlmRequest, SpendEstimate, estimate, parse_request
from portcullis.llm.ledger import LlmCharge, LlmHold, LlmLedger
from portcullis.llm.refusal import LlmRefusal
from portcullis.llm.request_body import outgoing_body
from portcullis.llm.route import LlmCaller, LlmRoute, LlmSpend
from portcullis.llm.screening import screen
from portcullis.llm.stream_relay import LlmStream, StreamEnd
from portcullis.llm.usage import usage_from_answer
from portcullis.stores.base import ReservationRefused, ReservationStore

__all__ = ["LlmCalls", "PreparedCall", "is_stream"]


def is_stream(content_type: str | None, request_stream: bool, status: int) -> bool:
    """Whether an answer is relayed as a stream."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "text/event-stream" or (request_stream and 200 <= status < 300)


@dataclass(slots=True)
class PreparedCall:
    """A call that passed screening and holds its reservation: send ``body``, then end it once."""

    route: LlmRoute
    request: LlmRequest
    spend: SpendEstimate
    hold: LlmHold
    body: bytes
    _ledger: LlmLedger
    _clock: Clock
    charge: LlmCharge | None = None
    stream_end: StreamEnd | None = None

    async def settle_answer(self, status: int, answer: bytes) -> LlmCharge:
        """Settle from a whole (non-streamed) answer."""
        try:
            parsed = orjson.loads(answer) if answer else None
        except orjson.JSONDecodeError:
            parsed = None
        usage = usage_from_answer(self.route.provider, parsed)
        if usage is None and not 200 <= status < 300:
            await self._ledger.release(self.hold)
            self.charge = LlmCharge(None, LlmSpend(0, 0), over_reserved=False, hold_expired=False)
            return self.charge
        self.charge = await self._ledger.settle(self.hold, usage)
        return self.charge

    async def settle_unknown(self) -> LlmCharge:
        """Settle a call that may have reached the provider but gave no answer: the whole reservation."""
        self.charge = await self._ledger.settle(self.hold, None)
        return self.charge

    def relay(self, chunks: AsyncIterator[bytes]) -> LlmStream:
        """Wrap a streamed answer's chunks: relayed with the route's limits, settled when it ends."""
        async def on_end(end: StreamEnd) -> None:
            self.stream_end = end
            self.charge = await self._ledger.settle(self.hold, end.usage.usage)

        route = self.route
        return LlmStream(chunks, provider=route.provider, max_bytes=route.max_stream_bytes,
                         max_duration_s=route.max_stream_duration_s, clock=self._clock, on_end=on_end,
                         max_event_chars=route.max_event_chars)

    async def not_sent(self) -> None:
        """Nothing reached the provider: give the whole reservation back (no-op once ended)."""
        if not self.hold.done:
            await self._ledger.release(self.hold)


class LlmCalls:
    """One LLM route's calls: built once per config load, ``prepare`` per call."""

    def __init__(self, route: LlmRoute, store: ReservationStore, clock: Clock) -> None:
        self.route = route
        self._ledger = LlmLedger(route, store, clock)
        self._clock = clock

    def check(self, raw: bytes) -> tuple[LlmRequest, SpendEstimate] | LlmRefusal:
        """Parse, screen and estimate, holding nothing (a ``validate_only`` call's report)."""
        route = self.route
        request = parse_request(raw, max_bytes=route.max_request_bytes)
        if isinstance(request, LlmRefusal):
            return request
        if route.screen_rules is not None:
            result = screen(request.body, route.screen_rules)
            if isinstance(result, LlmRefusal):
                return result
        spend = estimate(request, route.estimate_rules)
        return spend if isinstance(spend, LlmRefusal) else (request, spend)

    async def prepare(self, caller: LlmCaller, raw: bytes) -> PreparedCall | LlmRefusal | ReservationRefused:
        """Parse, screen, estimate and reserve; a refusal means nothing was held or sent.
        Raises ``StoreUnavailable`` from a reservation store that cannot tell."""
        route = self.route
        request = parse_request(raw, max_bytes=route.max_request_bytes)
        if isinstance(request, LlmRefusal):
            return request
        screened = None
        if route.screen_rules is not None:
            result = screen(request.body, route.screen_rules)
            if isinstance(result, LlmRefusal):
                return result
            screened = result.body
        spend = estimate(request, route.estimate_rules)
        if isinstance(spend, LlmRefusal):
            return spend
        body = outgoing_body(request, spend, route.provider, screened=screened,
                             add_stream_usage=route.add_stream_usage)
        hold = await self._ledger.reserve(caller, spend)
        if isinstance(hold, ReservationRefused):
            return hold
        return PreparedCall(route, request, spend, hold, body, self._ledger, self._clock)
