"""``PipelineBackend``: the proxy door's ``ProxyBackend`` over the gateway's egress pipeline.

Why this is all a backend does: the decisions are the pipeline's (``EgressExecutor.run`` for a
request, ``admit_tunnel`` for an unread tunnel), so the proxy door answers a refusal with the same
status, problem document and audit decision as the HTTP door and the in-process transport, and
counts the same metrics. What is the proxy's own: the key check (``Proxy-Authorization``, the
``egress.proxy.scopes`` a key must hold), which route a URL or a tunnel belongs to (``routes``),
the rule that an ``https`` route with path or method rules is never spliced unread, and the audit
records: one per forwarded request (route ``egress``, shaped like the transport's, with
``door: proxy``), one per ``CONNECT`` (method ``CONNECT``, its host and port as the path, the
bytes each way, how it ended), one per request the listener refused itself.

It reads the pipeline through ``current`` on every call, so a reload that swaps the executor (new
routes, budgets, limits) applies to the next request and the next tunnel; a tunnel already open
keeps what it was admitted with.

What it refuses to do: take the budgets' user from the client (it is the key's consumer), let a
key-store outage look like a bad key (503, not 407), or let an address guess keys without limit
(the gateway's failed-authentication shield, shared with the other doors: 429 once spent).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from portcullis.audit.record import AuditRecord
from portcullis.audit.redact import redact_query
from portcullis.clock import Clock
from portcullis.config.egress import EgressConfig
from portcullis.egress.budgets import CallContext
from portcullis.egress.call.outcome import refused as refused_outcome
from portcullis.egress.executor import EgressExecutor, EgressOutcome, EgressRequest
from portcullis.egress.proxy.base import (
    ForwardRequest,
    ForwardResponse,
    ProxyCredentials,
    ProxyIdentity,
    TunnelGrant,
    TunnelMode,
    TunnelRecord,
    TunnelRefused,
    TunnelRequest,
)
from portcullis.egress.proxy.routes import RouteMap, splice_refusal, tunnel_mode
from portcullis.egress.ssrf import UnsafeUrl, parse_egress_url
from portcullis.errors import (
    ClientError,
    EgressDenied,
    ErrorCode,
    Forbidden,
    RateLimited,
    StoreUnavailable,
    Unauthenticated,
    UpstreamError,
)
from portcullis.http.headers import get_one
from portcullis.identity.api_keys import ApiKeyVerifier
from portcullis.observability.metrics import GatewayMetrics
from portcullis.pipeline.handler import BodyStream
from portcullis.policies.stage2_authenticate.failed_auth_shield import FailedAuthShield, Limited, Outcome
from portcullis.server.base import Refusal

__all__ = ["AUDIT_ROUTE", "PipelineBackend", "ProxyPipeline"]

AUDIT_ROUTE = "egress"  # the route name every egress door's records carry
_USERINFO = re.compile(rb"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")


@dataclass(frozen=True, slots=True)
class ProxyPipeline:
    """What the backend reads from the runtime now serving: the executor, its config, the key check."""

    executor: EgressExecutor
    egress: EgressConfig
    verifier: ApiKeyVerifier | None


class PipelineBackend:
    """``ProxyBackend`` over ``current()``'s egress pipeline (``None``: egress is not configured now)."""

    def __init__(self, current: Callable[[], ProxyPipeline | None], *, audit: Callable[[AuditRecord], None],
                 clock: Clock, metrics: GatewayMetrics | None = None, shield: FailedAuthShield | None = None) -> None:
        """``shield``: the per-address budget of failed authentications (``shield.failed_auth_rate``),
        counted with the other doors' in the gateway's limiter."""
        self._current = current
        self._shield = shield
        self._audit = audit
        self._clock = clock
        self._metrics = metrics
        self._routes: tuple[EgressConfig, RouteMap] | None = None

    def _pipeline(self) -> ProxyPipeline:
        pipeline = self._current()
        if pipeline is None:
            raise ClientError("egress_not_configured", code=ErrorCode.SERVICE_UNAVAILABLE)
        return pipeline

    def _route_map(self, egress: EgressConfig) -> RouteMap:
        cached = self._routes
        if cached is None or cached[0] is not egress:  # compiled once per config (a reload brings a new one)
            cached = self._routes = (egress, RouteMap(egress))
        return cached[1]

    async def authenticate(self, credentials: ProxyCredentials, *, client_ip: str, request_id: str) -> ProxyIdentity:
        pipeline = self._pipeline()
        if pipeline.verifier is None:  # the config requires `keys` with a proxy; a wiring fault otherwise
            raise ClientError("no_key_verifier", code=ErrorCode.INTERNAL)
        verifier = pipeline.verifier
        if self._shield is None:
            try:
                outcome: Outcome = await verifier.verify(credentials.api_key)
            except (Unauthenticated, StoreUnavailable) as exc:
                outcome = exc
        else:
            limited = self._shield.blocked(client_ip)  # refused before any check: no oracle for a good guess
            outcome = limited or await self._shield.verify(client_ip, credentials.api_key,
                                                           lambda: verifier.verify(credentials.api_key))
        if isinstance(outcome, Limited):
            raise RateLimited("failed_auth_limited", retry_after_s=outcome.retry_after_s)
        if isinstance(outcome, Unauthenticated):
            raise outcome
        if isinstance(outcome, StoreUnavailable):
            raise ClientError("key_store_unavailable", code=ErrorCode.SERVICE_UNAVAILABLE)
        principal = outcome
        proxy = pipeline.egress.proxy
        needed = frozenset(proxy.scopes) if proxy is not None else frozenset()
        if not needed <= principal.scopes:
            raise Forbidden("proxy_scope_missing")
        return ProxyIdentity(principal.consumer_id, principal.key_id, credentials.workflow_id,
                             credentials.execution_id, principal)

    async def forward(self, request: ForwardRequest) -> ForwardResponse:
        pipeline = self._pipeline()
        started = self._clock.monotonic()
        route, relative = "", "/"
        try:
            target = parse_egress_url(request.url)
        except UnsafeUrl:  # the listener parsed it with the same rules: not reached
            target = None
        if target is not None:
            match = self._route_map(pipeline.egress).for_url(target.scheme, target.host, target.port,
                                                             target.path_and_query)
            if match is not None:
                route, relative = match.route.name, match.relative
        ident = request.identity
        call = EgressRequest(
            route=route, method=request.method, path_and_query=relative,
            context=CallContext(ident.execution_id, ident.workflow_id, ident.consumer_id),
            headers=list(request.headers),
            body=request.body or None, request_id=request.request_id, client_ip=request.client_ip,
            principal=ident.principal,
        )
        # A URL no route covers runs as an unknown route: refused as every door refuses one.
        outcome = await pipeline.executor.run(call)
        if isinstance(outcome.body, bytes):
            self._record_call(request, call, outcome, started, len(outcome.body), outcome.decision)
            return ForwardResponse(outcome.status, outcome.headers, outcome.body)

        def ended(sent: int, cut: str | None) -> None:
            # Recorded once the stream is settled (its usage, how it ended), as the other doors do; a
            # stream cut upstream says so in the decision, as the HTTP door's does.
            decision = outcome.decision
            if cut is not None:
                decision = "upstream_error:response_truncated" + ("" if cut == "response_truncated" else f":{cut}")
            self._record_call(request, call, outcome, started, sent, decision)

        return ForwardResponse(outcome.status, outcome.headers, _RecordedStream(outcome.body, ended))

    async def admit_tunnel(self, request: TunnelRequest) -> TunnelGrant:
        pipeline = self._pipeline()
        route = self._route_map(pipeline.egress).for_tunnel(request.host, request.port)
        ident = request.identity
        call = EgressRequest(
            route=route.name if route is not None else "", method="CONNECT", path_and_query="/",
            context=CallContext(ident.execution_id, ident.workflow_id, ident.consumer_id),
            headers=list(request.headers),
            request_id=request.request_id, client_ip=request.client_ip, principal=ident.principal,
        )
        mode = tunnel_mode(route) if route is not None else TunnelMode.SPLICE
        if route is not None and mode is not TunnelMode.SPLICE:
            return TunnelGrant(route.name, mode)  # each request inside is checked and charged
        refusal = splice_refusal(route) if route is not None else None
        if refusal is not None:
            # Rendered by the pipeline's own renderer (the same problem document as every door).
            outcome = refused_outcome(call, EgressDenied(refusal))
            raise TunnelRefused(ForwardResponse(outcome.status, outcome.headers, outcome.body), outcome.decision)
        admitted = await pipeline.executor.admit_tunnel(call, request.host, request.port)
        if isinstance(admitted, EgressOutcome):
            raise TunnelRefused(ForwardResponse(admitted.status, admitted.headers, admitted.body), admitted.decision)
        return TunnelGrant(call.route, mode, admitted.addresses, connect_timeout_s=admitted.connect_timeout_s)

    def tunnel_closed(self, record: TunnelRecord) -> None:
        ident = record.identity
        egress: dict[str, Any] = {
            "door": "proxy", "route": record.route, "host": record.host, "port": record.port,
            "mode": record.mode.value if record.mode is not None else None, "address": record.address,
            "ended": record.ended or None, "requests": record.requests,
            "workflow_id": ident.workflow_id if ident else None, "execution_id": ident.execution_id if ident else None,
        }
        self._audit(AuditRecord.create(
            clock=self._clock, request_id=record.request_id, client_ip=record.client_ip,
            consumer_id=ident.consumer_id if ident else None, key_id=ident.key_id if ident else None,
            method="CONNECT", route=AUDIT_ROUTE, path=f"{_shown(record.host)}:{record.port}" if record.host else "-",
            query=None, status=record.status, decision=record.decision, latency_ms=round(record.duration_s * 1000, 3),
            bytes_in=record.bytes_up, bytes_out=record.bytes_down, upstream_status=None, user_agent=None,
            egress=egress,
        ))
        if self._metrics is not None:
            route = record.route or ""
            self._metrics.egress_proxy_tunnels.labels(route, record.decision.split(":", 1)[0]).inc()
            if record.bytes_up or record.bytes_down:
                self._metrics.egress_proxy_tunnel_bytes.labels(route, "up").inc(record.bytes_up)
                self._metrics.egress_proxy_tunnel_bytes.labels(route, "down").inc(record.bytes_down)

    def refused(self, refusal: Refusal) -> Sequence[tuple[bytes, bytes]]:
        # An absolute-form target may carry user info (``http://user:secret@host/``): never recorded.
        path, _, query = _USERINFO.sub(rb"\1***@", refusal.target).partition(b"?")
        self._audit(AuditRecord.create(
            clock=self._clock, request_id=refusal.request_id, client_ip=refusal.peer or "-", consumer_id=None,
            key_id=None, method=refusal.method or "-", route=AUDIT_ROUTE, path=path.decode("latin-1") or "-",
            query=redact_query(query) if query else None, status=refusal.status, decision=refusal.decision,
            latency_ms=round(refusal.duration_s * 1000, 3), bytes_in=refusal.bytes_in, bytes_out=0,
            upstream_status=None, user_agent=_user_agent(refusal.headers), egress={"door": "proxy"},
        ))
        if self._metrics is not None:
            self._metrics.egress_proxy_refusals.labels(refusal.kind).inc()
        return ()

    def _record_call(self, request: ForwardRequest, call: EgressRequest, outcome: EgressOutcome,
                     started: float, sent: int, decision: str) -> None:
        """One audit record per forwarded request, shaped like the other doors' (route ``egress``)."""
        path, _, query = call.path_and_query.partition("?")
        result = outcome.result
        egress = {**outcome.audit, "door": "proxy"}
        if request.tunnel is not None:
            egress["tunnel"] = request.tunnel.value
        self._audit(AuditRecord.create(
            clock=self._clock, request_id=call.request_id, client_ip=call.client_ip,
            consumer_id=call.context.user, key_id=request.identity.key_id, method=call.method, route=AUDIT_ROUTE,
            path=f"/{call.route}{path}", query=redact_query(query) if query else None, status=outcome.status,
            decision=decision, latency_ms=round((self._clock.monotonic() - started) * 1000, 3),
            bytes_in=len(call.body or b""), bytes_out=sent,
            upstream_status=result.status if result is not None else None,
            user_agent=_user_agent(request.headers), egress=egress,
            trace_id=result.trace_id if result is not None else None,
        ))


class _RecordedStream:
    """A streamed answer that reports, once settled, the bytes handed on and whether it was cut."""

    def __init__(self, body: BodyStream, ended: Callable[[int, str | None], None]) -> None:
        self._body = body
        self._ended = ended
        self._sent = 0
        self._cut: str | None = None
        self._closed = False

    async def _relay(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._body:
                self._sent += len(chunk)
                yield chunk
        except UpstreamError as exc:
            self._cut = exc.reason
            raise

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._relay()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._body.aclose()  # settles the call (usage, budgets) before it is recorded
        finally:
            self._ended(self._sent, self._cut)


def _user_agent(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    value = get_one(headers, b"user-agent")
    return value.decode("latin-1")[:256] if value is not None else None


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host
