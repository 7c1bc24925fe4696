"""What one config load builds, and what lives for the whole process.

Why two lifetimes: a reload must swap routes, chains, upstream pools and issuers atomically, but it
must not reset rate-limit counters, lose queued audit records or reopen the store. ``Services``
hold the process-lifetime state; ``Runtime`` holds everything derived from one config, and is
built beside the old one and swapped in a single assignment.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from portcullis.anomaly.service import AnomalyService
from portcullis.audit.record import AuditRecord
from portcullis.audit.redact import redact_query
from portcullis.clock import Clock
from portcullis.config.model import GatewayConfig
from portcullis.errors import StoreUnavailable
from portcullis.http.client_ip import ClientAddressResolver
from portcullis.http.context import RequestContext
from portcullis.http.headers import get_one
from portcullis.identity.principal import Principal
from portcullis.ingress.forward import ForwardHeaders
from portcullis.ingress.router import Router
from portcullis.observability.metrics import GatewayMetrics
from portcullis.observability.store_health import StoreProbe
from portcullis.observability.tracing import PassThroughTracer, Tracer
from portcullis.pipeline.base import Policy
from portcullis.pipeline.chain import PolicyChain
from portcullis.pipeline.handler import RouteHandler
from portcullis.upstream.base import Timeouts, Upstream
from portcullis.vault import Vault

if TYPE_CHECKING:
    from portcullis.audit.retention import RetentionTask
    from portcullis.audit.writer import AuditWriter
    from portcullis.controls.service import IncidentControls
    from portcullis.identity.api_keys import ApiKeyVerifier
    from portcullis.identity.jwt_tokens import JwtVerifier
    from portcullis.identity.signing_keys import SigningKeyring
    from portcullis.limiting.limiter import MultiLimiter
    from portcullis.stores.base import NonceStore, Store
    from portcullis.stores.shared_state import SharedState

__all__ = ["CompiledRoute", "Runtime", "Services", "UpstreamAddress"]

log = logging.getLogger("portcullis.runtime")

_KEY_USE_FLUSH_S = 30.0


@dataclass(slots=True)
class Services:
    """Process-lifetime state shared by every runtime: store, vault, counters, audit, metrics, and the
    incident controls (blocks and emergency limits survive reloads). The egress side's own
    (resolver, budget counters) are added by ``gateway.runtime.GatewayServices``."""

    clock: Clock
    metrics: GatewayMetrics
    store: Store
    limiter: MultiLimiter
    audit: AuditWriter
    vault: Vault
    controls: IncidentControls
    readiness: dict[str, bool] = field(default_factory=dict)
    shared: SharedState | None = None  # Redis: counters, budgets, breaker states, events
    retention: RetentionTask | None = None  # audit.retention, removing expired records from the store
    anomaly: AnomalyService | None = None  # baselines per route and consumer (survive reloads)
    store_probe: StoreProbe | None = None  # portcullis_store_up
    tracer: Tracer = field(default_factory=PassThroughTracer)  # tracing.enabled: spans and their exporter
    nonces: NonceStore | None = None  # signed requests' nonces: memory, or Redis with shared state (survive reloads)

    async def aclose(self) -> None:
        """Stop audit retention, drain the audit queue, then close the store. Called once, at shutdown."""
        if self.retention is not None:
            await self.retention.aclose()
        if self.anomaly is not None:
            await self.anomaly.aclose()
        if self.store_probe is not None:
            await self.store_probe.aclose()
        await self.controls.aclose()
        await self.audit.aclose()
        await self.store.aclose()
        if self.shared is not None:
            await self.shared.aclose()  # the limiter's store is the shared one
        else:
            await self.limiter.store.aclose()
        await self.tracer.aclose()  # last: spans of the requests drained above are flushed too


@dataclass(frozen=True, slots=True)
class UpstreamAddress:
    """Where a route's upstream is, as its client span names it (``server.address``, ``url.full``)."""

    host: str
    port: int
    base_url: str


@dataclass(slots=True)
class CompiledRoute:
    """One route, ready to serve: its chain, upstream pool, timeouts and header builder."""

    name: str
    chain: PolicyChain
    upstream: Upstream
    timeouts: Timeouts
    forward: ForwardHeaders
    max_body_bytes: int | None
    handler: RouteHandler | None = None  # the route answers itself (the egress door), not its upstream
    stream_body: bool = False  # request.body_buffering: streamed; the server dispatches at the head
    template: str = ""  # the route's path template: a span's http.route
    upstream_address: UpstreamAddress | None = None


@dataclass(slots=True, eq=False)
class Runtime:
    """Everything one config load builds. Immutable once serving; replaced whole on reload."""

    config: GatewayConfig
    services: Services
    router: Router
    routes: Mapping[str, CompiledRoute]
    base_chain: PolicyChain
    security_headers: Policy
    client_addresses: ClientAddressResolver
    upstreams: Mapping[str, Upstream]
    key_verifier: ApiKeyVerifier | None
    jwt_verifier: JwtVerifier | None
    max_header_bytes: int
    shed_when_audit_full: bool = False  # audit.when_full: shed; see GatewayApp._http
    # listen.tls on our server: the context new connections move onto (server.tls.follow), so a
    # reload applies new certificate, key, client CA and CRL files without a restart.
    server_tls: ssl.SSLContext | None = None
    signing_keys: SigningKeyring | None = None  # request-signing keys (routes with auth.signature)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def clock(self) -> Clock:
        return self.services.clock

    @property
    def metrics(self) -> GatewayMetrics:
        return self.services.metrics

    def is_trusted_peer(self, peer: str | None) -> bool:
        return self.client_addresses.is_trusted(peer)

    async def start(self) -> None:
        """Start background upkeep. JWKS are fetched on first use, not here."""
        if self.key_verifier is not None:
            self._tasks.append(asyncio.create_task(self._flush_key_use(self.key_verifier)))

    @staticmethod
    async def _flush_key_use(verifier: ApiKeyVerifier) -> None:
        # An operational timer, not a decision: real time, so a test's manual clock cannot spin it.
        while True:
            await asyncio.sleep(_KEY_USE_FLUSH_S)
            try:
                await verifier.flush_last_used()
            except StoreUnavailable:
                log.warning("could not record API key last use; will retry")

    async def aclose(self) -> None:
        """Close what this config load opened (upstream pools, JWKS sessions)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for upstream in self.upstreams.values():
            await upstream.aclose()
        for route in self.routes.values():
            if route.handler is not None:
                await route.handler.aclose()
        if self.jwt_verifier is not None:
            await self.jwt_verifier.aclose()
        if self.key_verifier is not None:
            try:
                await self.key_verifier.flush_last_used()
            except StoreUnavailable:  # a shutdown during a database outage still shuts down
                log.warning("could not record API key last use at shutdown: the store is unavailable")

    def record(self, ctx: RequestContext, status: int, route: CompiledRoute | None) -> None:
        """Queue the audit record and update metrics. Never raises; never awaits."""
        try:
            services = self.services
            latency = services.clock.monotonic() - ctx.started
            route_label = ctx.route_name or ""
            kind = ctx.decision.split(":", 1)[0]
            services.metrics.request_finished(route_label, status, kind, latency)
            principal = ctx.principal
            if services.anomaly is not None:
                services.anomaly.observe(ctx.route_name, principal.consumer_id if principal else None, status,
                                         latency, kind == "auth_failed")
            if not services.audit.enabled:
                return
            ua = get_one(ctx.headers, b"user-agent")
            services.audit.submit(AuditRecord.create(
                clock=services.clock,
                request_id=ctx.request_id,
                client_ip=ctx.client_ip,
                consumer_id=principal.consumer_id if principal else None,
                key_id=principal.key_id if principal else None,
                method=ctx.method,
                route=ctx.route_name,
                path=ctx.path,  # create() masks every string field
                query=redact_query(ctx.query) if ctx.query else None,
                status=status,
                decision=ctx.decision,
                latency_ms=round(latency * 1000, 3),
                bytes_in=ctx.bytes_in,
                bytes_out=ctx.bytes_out,
                upstream_status=ctx.upstream_status,
                user_agent=ua[:256].decode("latin-1") if ua else None,
                egress=ctx.egress,
                trace_id=ctx.trace_id,
                event=_client_cert_event(principal),
            ))
        except Exception:
            services.metrics.internal_errors.inc()
            log.exception("audit record failed request_id=%s", ctx.request_id)


def _client_cert_event(principal: Principal | None) -> dict[str, Any] | None:
    """For a request a client certificate authenticated: its fingerprint and subject (never the whole
    certificate) in the record's ``event``. The fingerprint is also the record's ``key_id``."""
    if principal is None or not principal.method.endswith("mtls"):
        return None
    claims = principal.claims
    return {"client_cert": {"sha256": claims.get("cert_sha256"), "subject": claims.get("cert_subject"),
                            "source": claims.get("cert_source")}}
