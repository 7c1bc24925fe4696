"""``EgressExecutor``: one egress call through its phases (``egress/call/``), for every door.

Why one composer: the HTTP door (``/egress/<route>/…``), the in-process httpx transport and the
proxy door must apply exactly the same policy, so each hands an ``EgressRequest`` to ``run`` and
renders the ``EgressOutcome`` it gets back. ``call`` is the same pipeline for code that wants the
sent call or the refusal as an exception (the phases' own tests, the admin API's probes).
``admit_tunnel`` runs phases 1 to 3 once for a proxy door's ``CONNECT`` tunnel it cannot read.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable

from portcullis.anomaly.service import AnomalyService
from portcullis.audit.record import AuditRecord
from portcullis.clock import Clock
from portcullis.config.egress import EgressConfig
from portcullis.controls.service import IncidentControls
from portcullis.egress.breaker import CircuitBreaker
from portcullis.egress.budgets import BudgetDecision, BudgetLimits, Budgets, CallContext, MemoryBudgetStore
from portcullis.egress.bulkhead import Permit, Timer
from portcullis.egress.call.outcome import EgressOutcome
from portcullis.egress.call.phase1_destination import Destination, DestinationPhase
from portcullis.egress.call.phase2_breaker import check_breaker
from portcullis.egress.call.phase3_limits import LimitsPhase, Preview
from portcullis.egress.call.phase3_llm import LlmCall, LlmPhase
from portcullis.egress.call.phase4_credentials import CredentialsPhase
from portcullis.egress.call.phase5_send import Sender, close_session
from portcullis.egress.call.phase6_record import Recorder
from portcullis.egress.call.request import EgressRequest, EgressResult, TunnelAdmission
from portcullis.egress.call.route import CALLER_ONLY_HEADERS, BreakerListener, EgressRoute, compile_route
from portcullis.egress.call.validate_only import validate_only_result
from portcullis.egress.lifetime import ExecutionLifetime
from portcullis.egress.priority import build_bulkheads
from portcullis.egress.run_mode import RunMode
from portcullis.egress.ssrf import Resolver, SsrfGuard
from portcullis.errors import (
    STORE_RETRY_AFTER_S,
    AuditBackpressure,
    ClientError,
    DependencyUnavailable,
    StoreUnavailable,
    UpstreamError,
)
from portcullis.http.header_rules import RequestHeaderRules
from portcullis.limiting.limiter import MultiLimiter
from portcullis.llm.route import LlmRoute
from portcullis.observability.budget_usage import BudgetUsage
from portcullis.observability.metrics import GatewayMetrics
from portcullis.observability.tracing import PassThroughTracer, Tracer
from portcullis.pipeline.handler import BodyStream
from portcullis.stores.base import EgressStateStore, ReservationStore
from portcullis.stores.memory import MemoryCounterStore
from portcullis.stores.memory_reservations import MemoryReservationStore
from portcullis.vault import Vault

__all__ = ["CALLER_ONLY_HEADERS", "EgressExecutor", "EgressOutcome", "EgressRequest", "EgressResult",
           "TunnelAdmission"]

log = logging.getLogger("portcullis.egress")


class EgressExecutor:
    """Executes egress calls for every route of one ``egress:`` config."""

    def __init__(
        self, config: EgressConfig, *, vault: Vault, resolver: Resolver, clock: Clock,
        budget_store: EgressStateStore | None = None, rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_breaker: BreakerListener | None = None,
        limiter: MultiLimiter | None = None, header_rules: RequestHeaderRules | None = None,
        controls: IncidentControls | None = None, audit: Callable[[AuditRecord], None] | None = None,
        budget_usage: BudgetUsage | None = None,
        tracer: Tracer | None = None, metrics: GatewayMetrics | None = None, anomaly: AnomalyService | None = None,
        timer: Timer | None = None, llm_reservations: ReservationStore | None = None,
        audit_full: Callable[[], bool] | None = None,
    ) -> None:
        """``header_rules`` decide which caller headers reach a provider, for every door: by default
        the default list (``RequestHeaderRules.defaults()``); the gateway passes its egress door's
        rules (the global ``request`` lists), so all of its doors apply the same ones. ``controls``:
        the incident controls enforced on every call (blocks, emergency factors); ``audit``: where the
        ``secret.read`` security events go (the audit writer's ``submit``); ``budget_usage``: the
        tracker behind the budget gauges, configured here with this config's budgets; ``tracer``: a
        client span per attempt, whose ``traceparent`` the provider receives (default: tracing off);
        ``metrics`` and ``anomaly``: what the record phase counts, for every door (``metrics`` also
        the bulkheads' queues and sheds); ``timer``: the bulkheads' queue timeouts (default: the loop's);
        ``llm_reservations``: where LLM routes hold their token and cost reservations (one per process,
        or the shared one); ``audit_full``: true while the audit queue is full and the gateway sheds
        then (``audit.when_full: shed``): every call and tunnel is refused before phase 1, so no door
        serves a call its record would be lost for."""
        self._config = config
        self._clock = clock
        self._audit_full = audit_full
        guard = SsrfGuard(resolver)
        rules = header_rules or RequestHeaderRules.defaults()
        b = config.budgets
        store = budget_store or MemoryBudgetStore()
        self._budgets = Budgets(BudgetLimits(
            execution_calls=b.execution_calls, execution_window_s=b.execution_window,
            execution_cost=b.execution_cost, workflow_calls_per_hour=b.workflow_calls_per_hour,
            workflow_calls_per_day=b.workflow_calls_per_day, user_calls_per_day=b.user_calls_per_day,
            user_cost_per_day=b.user_cost_per_day,
            endpoint_calls_per_workflow_day={r.name: r.calls_per_workflow_day for r in config.routes
                                             if r.calls_per_workflow_day is not None},
        ), store, clock, budget_usage)
        bulkheads = build_bulkheads(config, clock=clock, observer=metrics, timer=timer)
        self._routes: dict[str, EgressRoute] = {
            r.name: compile_route(config, r, guard=guard, vault=vault, clock=clock, audit=audit, on_breaker=on_breaker,
                                  bulkhead=bulkheads.get(r.name))
            for r in config.routes
        }
        lifetime = None
        if b.execution_max_lifetime is not None:
            lifetime = ExecutionLifetime(b.execution_max_lifetime, store, clock)
        self._destination = DestinationPhase(self._routes, guard=guard, header_rules=rules, controls=controls,
                                             clock=clock)
        self._limits = LimitsPhase(limiter=limiter or MultiLimiter(MemoryCounterStore(), clock),
                                   budgets=self._budgets, controls=controls, clock=clock, lifetime=lifetime)
        self._llm = LlmPhase(
            {r.name: LlmRoute.build(r.name, r.llm, total_timeout_s=r.total_timeout) for r in config.routes if r.llm},
            llm_reservations or MemoryReservationStore(), clock, metrics, budget_usage)
        self._credentials = CredentialsPhase(header_rules=rules, vault=vault, clock=clock, audit=audit)
        self._sender = Sender(guard=guard, clock=clock, rng=rng or random.Random(),
                              tracer=tracer or PassThroughTracer(), sleep=sleep)
        self._recorder = Recorder(metrics=metrics, anomaly=anomaly)
        if budget_usage is not None:
            limits = self._budgets.limits_by_route(self._routes)
            for route_name, llm_limits in self._llm.limits_by_route().items():
                limits[route_name] = {**limits.get(route_name, {}), **llm_limits}
            budget_usage.configure(limits, top_n=b.top_burners)

    async def run(self, request: EgressRequest) -> EgressOutcome:
        """The call, as every door answers it: never raises for a refusal or a provider's failure."""
        started = self._clock.monotonic()
        destination = None
        try:
            try:
                self._check_audit()
                destination = await self._destination.resolve(request)
                result = await self._through(destination, request)
            except StoreUnavailable as exc:
                raise _unavailable(exc) from None
        except (ClientError, UpstreamError) as exc:
            mode = destination.mode.mode if destination is not None else None
            return self._recorder.refused(request, exc, known_route=request.route in self._routes,
                                          took_s=self._clock.monotonic() - started, run_mode=mode)
        return self._recorder.answered(request, result, self._clock.monotonic() - started)

    async def call(self, request: EgressRequest) -> EgressResult:
        """The call through every phase; a refusal or failure raises its Portcullis error."""
        try:
            self._check_audit()
            return await self._through(await self._destination.resolve(request), request)
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None

    def _check_audit(self) -> None:
        if self._audit_full is not None and self._audit_full():
            raise AuditBackpressure

    async def _through(self, destination: Destination, request: EgressRequest) -> EgressResult:
        """Phases 2 to 5 for a call phase 1 let through (a ``validate_only`` call: its report)."""
        route = destination.route
        if destination.mode.mode is RunMode.VALIDATE_ONLY:
            preview = await self._limits.preview(destination, request.context)
            if request.body and route.name in self._llm:
                checks, spends = await self._llm.preview(
                    route.name, destination.mode.budget_context(request.context), request.body)
                preview = Preview(preview.checks + checks, spends + preview.spends)
            return validate_only_result(destination, preview)
        check_breaker(route)
        llm: list[LlmCall] = []  # an LLM route's call, once its reservation is held (``phase3_llm``)

        async def reserve() -> None:
            context = destination.mode.budget_context(request.context)
            llm.append(await self._llm.reserve(route.name, context, request.body))

        # No body, no prompt: a call without one (a listing, a retrieval) is no LLM call.
        is_llm = bool(request.body) and route.name in self._llm
        try:
            admission = await self._limits.admit(destination, request.context, reserve=reserve if is_llm else None)
        except BaseException as exc:
            if llm:
                await llm[0].failed(exc)  # refused after its reservation: given back
            raise
        permit = admission.permit
        call = llm[0] if llm else None
        try:
            headers = await self._credentials.headers(destination, request)
            if call is None:
                sent = await self._sender.send(route, destination.method, destination.url, headers, request,
                                               destination.caller)
            else:
                sent = await self._sender.send(route, destination.method, destination.url, call.headers(headers),
                                               request, destination.caller, body=call.body, stream_if=call.stream_if)
        except BaseException as exc:
            if permit is not None:
                permit.release()
            if call is not None:
                await call.failed(exc)
            raise
        answer = sent.answer
        body: bytes | BodyStream = answer.body
        budget = admission.budget
        if call is not None:
            if answer.stream is not None:
                budget = _with_llm_left(budget, call)  # its hold still in
                body = call.relay(answer.stream)  # settled when the stream ends
            else:
                await call.answered(answer.status, answer.body)
                budget = _with_llm_left(budget, call)
        if permit is not None:
            if isinstance(body, bytes):
                permit.release()
            else:  # a streamed answer holds its place until the stream is settled
                body = _Releasing(body, permit)
        return EgressResult(answer.status, answer.headers, body, sent.attempts, budget,
                            route.breaker.state, host=route.host, cost=admission.cost, secrets=route.secrets,
                            trace_id=sent.trace_id, run_mode=destination.mode.mode,
                            llm=call.audit if call is not None else None)

    async def admit_tunnel(self, request: EgressRequest, host: str, port: int) -> TunnelAdmission | EgressOutcome:
        """A proxy door's ``CONNECT host:port`` tunnel on ``request.route``, through phases 1 to 3 once
        for the whole tunnel: blocks, the run mode, the guard for the host and port under the route's
        policy (the checked addresses are the only ones to dial), the breaker, the execution's
        lifetime, the route's limits, its bulkhead's turn (given back at once) and the budgets. Never
        raises for a refusal: the refusal is the ``EgressOutcome`` every door renders."""
        started = self._clock.monotonic()
        destination = None
        try:
            try:
                self._check_audit()
                destination = await self._destination.tunnel(request, host, port)
                check_breaker(destination.route)
                admission = await self._limits.admit(destination, request.context)
            except StoreUnavailable as exc:
                raise _unavailable(exc) from None
        except (ClientError, UpstreamError) as exc:
            mode = destination.mode.mode if destination is not None else None
            return self._recorder.refused(request, exc, known_route=request.route in self._routes,
                                          took_s=self._clock.monotonic() - started, run_mode=mode)
        if admission.permit is not None:
            # A bulkhead place is a call's, for the call's time: a tunnel may last an hour, and holding
            # a place that long would starve the queue; the tunnel took its turn and its spend.
            admission.permit.release()
        return TunnelAdmission(destination.addresses, admission.budget, admission.cost,
                               destination.route.config.connect_timeout)

    def breaker(self, route: str) -> CircuitBreaker:
        return self._routes[route].breaker

    def has_route(self, name: str) -> bool:
        return name in self._routes

    async def budgets_remaining(self, context: CallContext, route: str) -> dict[str, float]:
        """What is left of each budget a call to ``route`` would spend from; raises ``KeyError`` for no route."""
        if route not in self._routes:
            raise KeyError(route)
        return {**await self._budgets.remaining(context, route), **await self._llm.remaining(route, context)}

    async def reset_budgets(self, *, workflow_id: str | None = None, execution_id: str | None = None,
                            user: str | None = None) -> list[str]:
        """An operator's reset of one execution's, workflow's or user's budget counters (its LLM
        token and cost budgets on every LLM route included)."""
        keys = await self._budgets.reset(workflow_id=workflow_id, execution_id=execution_id, user=user)
        return keys + await self._llm.reset(workflow_id=workflow_id, execution_id=execution_id, user=user)

    def breakers(self) -> dict[str, CircuitBreaker]:
        """Every route's breaker, by route name (for the admin API)."""
        return {name: r.breaker for name, r in self._routes.items()}

    async def aclose(self) -> None:
        for route in self._routes.values():
            await route.origin_check.aclose()
            if route.oauth2 is not None:
                await route.oauth2.aclose()
            await close_session(route)


def _unavailable(exc: StoreUnavailable) -> DependencyUnavailable:
    """A store outage no phase answered for itself (each store has its own failover rule; this is
    the net under them): a 503 the caller may retry, never an internal error."""
    log.warning("egress call refused: a store is unavailable (%s)", exc)
    return DependencyUnavailable("store_unavailable", retry_after_s=STORE_RETRY_AFTER_S)


def _with_llm_left(budget: BudgetDecision, call: LlmCall) -> BudgetDecision:
    """The call's budgets left, with its LLM route's token and cost budgets added: what a call could
    reserve now, as the reservation store answered the call's latest step (after its usage for a
    JSON answer; with its reservation still held for a stream, whose usage is known only at its
    end). Left out when the store could not tell: the call was answered, and a header is no reason
    to fail it. No extra read: the store answers what is left in the step itself."""
    left = call.left()
    if not left:
        return budget
    return BudgetDecision(budget.allowed, budget.exhausted, {**budget.remaining, **left}, budget.reset_s,
                          budget.burned)


class _Releasing:
    """A streamed answer that gives its bulkhead place back when it is settled (ended, cut or closed)."""

    def __init__(self, body: BodyStream, permit: Permit) -> None:
        self._body = body
        self._permit = permit

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._body.__aiter__()

    async def aclose(self) -> None:
        try:
            await self._body.aclose()
        finally:
            self._permit.release()
