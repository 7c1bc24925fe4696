"""Phase 3, on LLM routes: the call's token and cost reservation, and its settlement when it ends.

Why in phase 3: a reservation is a budget, so it is taken in admission with the others, before
anything is sent: after the endpoint's rate limit and the call's bulkhead place (a queued call
holds no tokens), before the call budgets (a reservation can be given back, a call-budget unit
cannot: a call refused for its reservation spends no call unit, and one refused by a call budget
releases its reservation). The keys are those of the call's run mode (a test run's are its own).
The rules themselves are ``portcullis.llm`` (``LlmCalls``: parse once, screen, estimate, reserve);
this module turns their refusals into the pipeline's errors, sends the gateway's own body, and
settles:

- a buffered answer at once, from its ``usage``;
- a streamed one when the relay ends (``EgressLlmStream``), however it ends;
- a call that never reached the provider (refused by a later phase, no connection) is released;
  one that may have reached it (a timeout, a connection lost mid-way) is charged its whole
  reservation, as an answer without usage is.

Refusals: a body over the route's ``max_request_bytes`` is 413; a prompt screening refuses, a body
that is not one JSON object, an output cap over the route's, a model without a price are 400
``request.invalid_body`` (the rule in the audit, never the prompt); a reservation that does not fit
is 429 ``budget.exhausted`` naming the budget, like a call budget.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from portcullis.clock import Clock
from portcullis.egress.budgets import CallContext
from portcullis.egress.run_mode import PlannedCheck, PlannedSpend
from portcullis.errors import (
    BudgetExhausted,
    CircuitOpen,
    ClientError,
    ErrorCode,
    PayloadTooLarge,
    StoreUnavailable,
    UpstreamProtocolError,
    UpstreamUnavailable,
)
from portcullis.http.headers import RawHeaders
from portcullis.llm.call import LlmCalls, PreparedCall, is_stream
from portcullis.llm.ledger import LlmCharge, LlmHold
from portcullis.llm.refusal import LlmReason, LlmRefusal
from portcullis.llm.route import LlmCaller, LlmRoute, LlmSpend
from portcullis.llm.stream_relay import LlmStream, StreamCut
from portcullis.observability.budget_usage import BudgetUsage, budget_subject
from portcullis.observability.metrics import GatewayMetrics
from portcullis.stores.base import BudgetLine, ReservationStore
from portcullis.stores.failover_reservations import SHARED_STATE

__all__ = ["EgressLlmStream", "LlmCall", "LlmPhase"]

_NOT_SENT = ("egress_unreachable", "egress_blocked")


class LlmCall:
    """One LLM call in flight: its prepared request, and what its audit record says about it."""

    def __init__(self, prepared: PreparedCall, metrics: GatewayMetrics | None, gauges: _Gauges) -> None:
        self.prepared = prepared
        self._metrics = metrics
        self._gauges = gauges
        gauges.observe(prepared.hold)
        spend = prepared.spend
        self.audit: dict[str, Any] = {
            "model": spend.model, "stream": prepared.request.stream,
            "reserved_tokens": spend.total_tokens, "reserved_cost": spend.cost_micros / 1_000_000,
        }

    @property
    def body(self) -> bytes:
        return self.prepared.body

    def stream_if(self, status: int, content_type: str | None) -> bool:
        return is_stream(content_type, self.prepared.request.stream, status)

    def headers(self, headers: RawHeaders) -> RawHeaders:
        """The call's headers (lower-case names) with the answer asked uncompressed: usage is read
        from its bytes."""
        return [(k, v) for k, v in headers if k != b"accept-encoding"] + [(b"accept-encoding", b"identity")]

    async def answered(self, status: int, body: bytes) -> None:
        self.charged(await self.prepared.settle_answer(status, body))

    def left(self) -> dict[str, float]:
        """What is left of each of the call's budgets, as the store said at its latest step (after
        the reservation; after the settlement once there is one); empty when it could not tell."""
        hold = self.prepared.hold
        if hold.reservation is None or not hold.left:
            return {}
        route = self.prepared.route
        return {line.name: route.shown(line, n) for line, n in zip(hold.reservation.lines, hold.left, strict=True)}

    def relay(self, chunks: AsyncIterator[bytes]) -> EgressLlmStream:
        return EgressLlmStream(self, self.prepared.relay(chunks))

    async def failed(self, exc: BaseException) -> None:
        """The call ended without an answer: release what was never sent, charge the rest in full."""
        if self.prepared.hold.done:
            return
        reason = getattr(exc, "reason", "")
        # Refused before sending (a store outage included: the stores are asked before the send).
        if isinstance(exc, ClientError | CircuitOpen | StoreUnavailable) or (
                isinstance(exc, UpstreamUnavailable) and reason.startswith(_NOT_SENT)):
            await self.prepared.not_sent()
            self._gauges.observe(self.prepared.hold)
            self.audit["charged"] = "released"
            return
        self.charged(await self.prepared.settle_unknown())

    def charged(self, charge: LlmCharge) -> None:
        self._gauges.observe(self.prepared.hold)
        usage = charge.usage
        self.audit.update({
            "usage": "reported" if usage is not None else "unknown",
            "input_tokens": usage.input_tokens if usage is not None else None,
            "output_tokens": usage.output_tokens if usage is not None else None,
            "charged_tokens": charge.spend.tokens, "cost": charge.spend.cost_micros / 1_000_000,
        })
        if charge.over_reserved:
            self.audit["over_reserved"] = True
        if charge.hold_expired:
            self.audit["hold_expired"] = True  # a call slower than its reservation's expiry: charged all the same
        if charge.lost:
            self.audit["charge_lost"] = True  # the shared store was down: these tokens reached no budget
        metrics = self._metrics
        if metrics is None:
            return
        route = self.prepared.route.name
        if charge.lost:
            metrics.egress_llm_charges_lost.labels(route).inc()
        if usage is not None:
            metrics.egress_llm_tokens.labels(route, "input").inc(usage.input_tokens)
            metrics.egress_llm_tokens.labels(route, "output").inc(usage.output_tokens)
        elif charge.spend.tokens:
            metrics.egress_llm_tokens.labels(route, "unknown").inc(charge.spend.tokens)
        if charge.spend.cost_micros:
            metrics.egress_cost.inc((route,), charge.spend.cost_micros / 1_000_000)


class EgressLlmStream:
    """A streamed LLM answer as the doors relay it: ``StreamCut`` becomes the pipeline's error."""

    def __init__(self, call: LlmCall, relay: LlmStream) -> None:
        self._call = call
        self._relay = relay

    def __aiter__(self) -> EgressLlmStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await anext(self._relay)
        except StreamCut as exc:
            self._ended()
            raise UpstreamProtocolError(f"stream_cut:{exc.reason}") from None
        except BaseException:
            self._ended()
            raise

    def _ended(self) -> None:
        end = self._call.prepared.stream_end
        if end is None:
            return
        self._call.audit.update({"stream_end": end.reason, "stream_bytes": end.bytes})
        charge = self._call.prepared.charge
        if charge is not None and "usage" not in self._call.audit:
            self._call.charged(charge)

    async def aclose(self) -> None:
        try:
            await self._relay.aclose()
        finally:
            self._ended()


class LlmPhase:
    """Every LLM route of one egress config, built at load."""

    def __init__(self, routes: Mapping[str, LlmRoute], store: ReservationStore, clock: Clock,
                 metrics: GatewayMetrics | None, budget_usage: BudgetUsage | None = None) -> None:
        """``budget_usage``: the budget gauges' tracker, told what each reservation step leaves."""
        self._calls = {name: LlmCalls(route, store, clock) for name, route in routes.items()}
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._usage = budget_usage

    def limits_by_route(self) -> dict[str, dict[str, float]]:
        """Each LLM route's budgets and their limits (tokens, or currency units), for the gauges."""
        probe = LlmCaller("-", "-", "-")
        return {name: {line.name: calls.route.shown(line, line.limit)
                       for line in calls.route.lines(probe, LlmSpend(0, 0))}
                for name, calls in self._calls.items()}

    def __contains__(self, route: str) -> bool:
        return route in self._calls

    async def preview(self, route: str, context: CallContext, body: bytes) -> tuple[
            tuple[PlannedCheck, ...], tuple[PlannedSpend, ...]]:
        """What a ``validate_only`` call would meet here: the prompt checks, and each budget line
        with the call's most against what is left of it (limit - used - held). Nothing is held."""
        calls = self._calls[route]
        checked = calls.check(body)
        if isinstance(checked, LlmRefusal):
            code = ErrorCode.REQUEST_TOO_LARGE if checked.reason is LlmReason.BODY_TOO_LARGE \
                else ErrorCode.REQUEST_INVALID_BODY
            return (PlannedCheck("llm_request", False, code),), ()
        _, spend = checked
        llm_route = calls.route
        caller = LlmCaller(context.execution_id, context.workflow_id, context.user)
        lines = llm_route.lines(caller, LlmSpend.of_estimate(spend))
        usage = await self._store.usage(lines, self._clock.monotonic())
        spends = []
        for line, u in zip(lines, usage, strict=True):
            left = max(0, line.limit - u.used - u.reserved)
            spends.append(PlannedSpend(line.name, llm_route.shown(line, line.amount), llm_route.shown(line, left),
                                       line.amount <= left))
        fits = all(p.fits for p in spends)
        return ((PlannedCheck("llm_request", True),
                 PlannedCheck("llm_budgets", fits, None if fits else ErrorCode.BUDGET_EXHAUSTED)), tuple(spends))

    async def remaining(self, route: str, context: CallContext) -> dict[str, float]:
        """What is left of each LLM budget a call to ``route`` in ``context`` would reserve from
        (limit - used - held), nothing reserved; empty for a route without an ``llm:`` block."""
        calls = self._calls.get(route)
        if calls is None:
            return {}
        llm_route = calls.route
        caller = LlmCaller(context.execution_id, context.workflow_id, context.user)
        lines = llm_route.lines(caller, LlmSpend(0, 0))
        usage = await self._store.usage(lines, self._clock.monotonic())
        return {line.name: llm_route.shown(line, max(0, line.limit - u.used - u.reserved))
                for line, u in zip(lines, usage, strict=True)}

    async def reset(self, *, workflow_id: str | None = None, execution_id: str | None = None,
                    user: str | None = None) -> list[str]:
        """An operator's reset: the subject's LLM budget lines on every LLM route, holds included."""
        keys = [key for calls in self._calls.values()
                for key in calls.route.subject_keys(workflow_id=workflow_id, execution_id=execution_id, user=user)]
        if keys:
            await self._store.reset(keys)
        return keys

    async def reserve(self, route: str, context: CallContext, body: bytes | None) -> LlmCall:
        """Screen, estimate and reserve; raises the refusal as the pipeline's error."""
        caller = LlmCaller(context.execution_id, context.workflow_id, context.user)
        calls = self._calls[route]
        prepared = await calls.prepare(caller, body or b"")
        gauges = _Gauges(self._usage, route, context)
        if isinstance(prepared, LlmRefusal):
            if prepared.reason is LlmReason.BODY_TOO_LARGE:
                raise PayloadTooLarge(prepared.audit_reason)
            raise ClientError(prepared.audit_reason, code=ErrorCode.REQUEST_INVALID_BODY)
        if not isinstance(prepared, PreparedCall):
            if self._metrics is not None:
                self._metrics.egress_llm_refused.labels(route, prepared.name).inc()
            if prepared.index >= 0:  # what is left of the line that refused, as the store said
                gauges.refused(calls.route.lines(caller, LlmSpend(0, 0))[prepared.index], prepared.available)
            raise BudgetExhausted(f"budget:{SHARED_STATE if prepared.index < 0 else prepared.name}",
                                  retry_after_s=prepared.reset_s)
        return LlmCall(prepared, self._metrics, gauges)


class _Gauges:
    """Tells the budget gauges' tracker what one call's reservation steps leave on its lines."""

    __slots__ = ("_context", "_route", "_usage")

    def __init__(self, usage: BudgetUsage | None, route: str, context: CallContext) -> None:
        self._usage, self._route, self._context = usage, route, context

    def observe(self, hold: LlmHold) -> None:
        if hold.reservation is not None and hold.left:
            self._feed(hold.reservation.lines, hold.left)

    def refused(self, line: BudgetLine, available: int) -> None:
        self._feed((line,), (available,))

    def _feed(self, lines: Sequence[BudgetLine], left: Sequence[int]) -> None:
        usage, ctx = self._usage, self._context
        if usage is not None:
            usage.held(self._route, lines, left,
                       lambda i: budget_subject(lines[i].name, ctx.workflow_id, ctx.execution_id, ctx.user))
