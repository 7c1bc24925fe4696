"""Config → runtime: compile routes, chains, upstream pools and verifiers once per load.

Why here and not in the policies: this is the one place that decides which policies a route gets
and in which order, so ``portcullis check`` / ``explain`` and the data path can never disagree —
both call ``plan_chain``.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from portcullis.anomaly.detector import DetectorSettings
from portcullis.anomaly.service import AnomalyService, AutoResponse
from portcullis.anomaly.webhook import WebhookNotifier
from portcullis.audit.jsonl import JsonlFileSink
from portcullis.audit.record import AuditRecord
from portcullis.audit.retention import RetentionTask, expiry_record
from portcullis.audit.setup import audit_chainer
from portcullis.audit.siem import open_siem_sinks
from portcullis.audit.writer import AuditWriter
from portcullis.clock import Clock, SystemClock
from portcullis.config.egress import SECRET_REFERENCE
from portcullis.config.model import (
    AuthConfig,
    EgressEntryConfig,
    GatewayConfig,
    IntrospectionConfig,
    JwtIssuerConfig,
    RequestConfig,
    RouteConfig,
    SharedStateConfig,
)
from portcullis.controls.service import IncidentControls
from portcullis.egress.breaker import BreakerState, CircuitBreaker
from portcullis.egress.executor import EgressExecutor
from portcullis.egress.http_door import EgressHttpDoor
from portcullis.egress.shared_breakers import SharedBreakers
from portcullis.errors import ConfigError, StoreUnavailable
from portcullis.gateway.runtime import GatewayRuntime, GatewayServices
from portcullis.http.client_ip import ClientAddressResolver
from portcullis.http.header_rules import RequestHeaderRules
from portcullis.identity.api_keys import ApiKeyVerifier
from portcullis.identity.claims import ClaimNames
from portcullis.identity.client_certs import CertMapper
from portcullis.identity.introspection import IntrospectionSettings, TokenIntrospector
from portcullis.identity.jwt_tokens import JwtVerifier
from portcullis.identity.signatures import SignatureVerifier
from portcullis.identity.signing_keys import SigningKeyring
from portcullis.identity.webhook_signatures import WebhookVerifier
from portcullis.ids import random_hex
from portcullis.ingress.forward import ForwardHeaders
from portcullis.ingress.router import Router
from portcullis.ingress.runtime import CompiledRoute, UpstreamAddress
from portcullis.ingress.tls import check_private_key_file, listener_context
from portcullis.limiting.base import CounterStore
from portcullis.limiting.limiter import MultiLimiter
from portcullis.llm.route import screen_rules
from portcullis.observability.budget_usage import BudgetUsage
from portcullis.observability.metrics import GatewayMetrics
from portcullis.observability.store_health import StoreProbe
from portcullis.observability.tracing import build_tracer
from portcullis.pipeline.base import Policy
from portcullis.pipeline.chain import PolicyChain
from portcullis.policies.stage1_shield.blocks import AddressBlockPolicy
from portcullis.policies.stage1_shield.cors import CorsPolicy
from portcullis.policies.stage1_shield.ip_rules import IpShieldPolicy
from portcullis.policies.stage2_authenticate.blocks import CallerBlockPolicy
from portcullis.policies.stage2_authenticate.credentials import AuthenticationPolicy, JwtAssertion
from portcullis.policies.stage2_authenticate.failed_auth_shield import FailedAuthShield, failed_auth_rule
from portcullis.policies.stage2_authenticate.mtls import MtlsPolicy, XfccTrust
from portcullis.policies.stage3_authorize.scopes import AuthorizePolicy, CelRule, RuleInputs, compile_rules
from portcullis.policies.stage3_authorize.step_up import StepUpPolicy
from portcullis.policies.stage4_limit.rate_limit import RateLimitPolicy
from portcullis.policies.stage5_validate.body import BodyPolicy
from portcullis.policies.stage5_validate.body_rules import BodyRulesPolicy
from portcullis.policies.stage5_validate.prompt_screening import PromptScreeningPolicy
from portcullis.policies.stage6_respond.security_headers import SecurityHeadersPolicy
from portcullis.stores.base import AuditSink, EgressStateStore, ReservationStore, SecretStore
from portcullis.stores.memory import MemoryCounterStore
from portcullis.stores.memory_budgets import MemoryBudgetStore
from portcullis.stores.memory_reservations import MemoryReservationStore
from portcullis.stores.nonces import MemoryNonceStore
from portcullis.stores.opening import open_store
from portcullis.stores.redis_breakers import RedisBreakerStates
from portcullis.stores.redis_events import CONTROLS_EVENT
from portcullis.stores.shared_state import SharedState, open_shared_state
from portcullis.upstream.base import Timeouts, Upstream, UpstreamRequest, UpstreamResponse
from portcullis.upstream.http1 import Http1Upstream
from portcullis.vault import SECRET_KEY_ENV, MasterKeys, Vault

__all__ = ["Verifiers", "build_runtime", "effective_request", "open_services", "plan_chain"]

log = logging.getLogger("portcullis.egress")


@dataclass(frozen=True, slots=True)
class Verifiers:
    keys: ApiKeyVerifier | None
    jwt: JwtVerifier | None
    failed_auth: FailedAuthShield | None = None  # shared by every route; None in `portcullis check`
    introspectors: Mapping[str, TokenIntrospector] = field(default_factory=dict)  # by issuer name
    signatures: SignatureVerifier | None = None  # routes with auth.signature; None in `portcullis check`
    webhooks: WebhookVerifier | None = None  # routes with auth.webhook_signature; None in `portcullis check`


async def open_vault(store: SecretStore, clock: Clock, env: Mapping[str, str] | None = None, *,
                     stale_if_error_s: float = 0.0) -> Vault:
    """The vault over ``store``, unlocked: raises ``VaultLocked`` if secrets exist and the master key
    (``PORTCULLIS_SECRET_KEY``) is missing or wrong, so a gateway never starts unable to inject."""
    keys: MasterKeys | None = None
    if (os.environ if env is None else env).get(SECRET_KEY_ENV):
        keys = MasterKeys.from_env(env)
    vault = Vault(store, keys, clock, stale_if_error_s=stale_if_error_s)
    await vault.unlock()
    return vault


async def open_services(
    config: GatewayConfig, *, clock: Clock, base_dir: Path | None = None, env: Mapping[str, str] | None = None
) -> GatewayServices:
    """Open the process-lifetime state: the store, the vault, counters, and the audit writer (started)."""
    base = base_dir or Path.cwd()
    store = await open_store(config.store, base_dir=base)
    try:
        vault = await open_vault(store, clock, env, stale_if_error_s=config.stale_if_error_s)
    except BaseException:
        await store.aclose()
        raise
    sinks: dict[str, AuditSink] = {}
    audit_cfg = config.audit
    if audit_cfg.file:
        sinks["file"] = JsonlFileSink(
            _resolve(base, audit_cfg.file), max_bytes=audit_cfg.max_file_bytes, backup_count=audit_cfg.backup_count
        )
    if audit_cfg.to_store:
        sinks["store"] = store
    try:
        sinks.update(await open_siem_sinks(audit_cfg.siem, base_dir=base, reveal=vault.reveal))
    except BaseException:
        await store.aclose()
        raise
    metrics = GatewayMetrics()
    vault.on_served_stale = metrics.secrets_served_stale.inc
    spill = _resolve(base, audit_cfg.spill_file)
    audit = AuditWriter(
        sinks, spill_path=spill, clock=clock, batch_size=audit_cfg.batch_size,
        flush_interval_s=audit_cfg.flush_interval, queue_max=audit_cfg.queue_max, on_lost=metrics.audit_records_lost,
        chainer=audit_chainer(audit_cfg, clock=clock, head_file=_resolve(base, audit_cfg.heads_file)),
    )
    await audit.start()
    retention = None
    if audit_cfg.to_store and audit_cfg.retention.enabled:
        r = audit_cfg.retention
        retention = RetentionTask(
            store, r, clock=clock, every_s=r.run_every, batch_rows=r.batch_rows, max_rows=r.max_rows_per_run,
            on_expired=lambda result: audit.submit(expiry_record(result, clock=clock, actor="system:retention")),
        )
        retention.start()
    metrics.audit_spilled.set_function(lambda: float(audit.waiting))
    metrics.audit_queued.set_function(lambda: float(audit.pending))
    controls = IncidentControls(store, clock, submit=audit.submit)
    try:
        await controls.refresh()  # blocks in force apply from the first request
    except StoreUnavailable as exc:
        log.error("incident controls: could not read the store at start-up (%s); retrying every %ss",
                  exc, config.controls.refresh_interval)
    counters: CounterStore = MemoryCounterStore()
    budgets: EgressStateStore = MemoryBudgetStore()
    reservations: ReservationStore = MemoryReservationStore()
    shared = None
    if config.shared_state is not None:
        shared = await open_shared(config.shared_state, clock)
        counters, budgets, reservations = shared.counters, shared.budgets, shared.reservations
        outage = shared.outage
        metrics.shared_state_degraded.set_function(lambda: float(outage.degraded))
        events = shared.events
        controls.set_publish(lambda: events.publish(CONTROLS_EVENT))
    controls.start(config.controls.refresh_interval)
    anomaly = _anomaly_service(config, clock, audit, metrics, controls)
    store_probe = StoreProbe(store)
    metrics.store_up.set_function(lambda: 1.0 if store_probe.up else 0.0)
    store_probe.start()
    budget_usage = BudgetUsage(clock)
    metrics.watch_budgets(budget_usage)
    tracer = build_tracer(config.tracing)
    return GatewayServices(
        clock=clock, metrics=metrics, store=store, limiter=MultiLimiter(counters, clock), audit=audit, vault=vault,
        controls=controls, egress_budgets=budgets, shared=shared, retention=retention, anomaly=anomaly,
        store_probe=store_probe, budget_usage=budget_usage, tracer=tracer, llm_reservations=reservations)


def _anomaly_service(config: GatewayConfig, clock: Clock, audit: AuditWriter, metrics: GatewayMetrics,
                     controls: IncidentControls) -> AnomalyService | None:
    a = config.anomaly
    if not a.enabled:
        return None
    response = None if a.response == "none" else AutoResponse(
        a.response, a.response_for, a.response_factor, config.controls.emergency_restore)
    service = AnomalyService(DetectorSettings(
        window_s=a.window, baseline_windows=a.baseline_windows, warmup_windows=a.warmup_windows,
        volume_factor=a.volume_factor, error_rate_factor=a.error_rate_factor, latency_factor=a.latency_factor,
        auth_failure_factor=a.auth_failure_factor, budget_burn_factor=a.budget_burn_factor,
        min_burn=a.min_budget_burn, min_requests=a.min_requests, max_subjects=a.max_subjects,
    ), clock, submit=audit.submit, count=lambda kind: metrics.anomalies.labels(kind).inc(), controls=controls,
        response=response, webhook=None if a.webhook is None else WebhookNotifier(
            a.webhook, timeout_s=a.webhook_timeout,
            secret=a.webhook_secret.get_secret_value().encode() if a.webhook_secret else None))
    service.start()
    return service


def _resolve(base: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base / p


_PROMPT_BODY_BYTES = 4 * 1024 * 1024  # the most a screened prompt body may be when the route sets no limit


def effective_request(config: GatewayConfig, route: RouteConfig) -> RequestConfig:
    """The route's request limits, falling back field by field to the global defaults."""
    glob, own = config.request, route.request
    return RequestConfig(
        max_body_bytes=own.max_body_bytes if own.max_body_bytes is not None else glob.max_body_bytes,
        content_types=own.content_types or glob.content_types,
        json_body=own.json_body if own.json_body is not None else glob.json_body,
        body_buffering=own.body_buffering or glob.body_buffering or "buffered",
    )


def plan_chain(
    config: GatewayConfig, route: RouteConfig, *, limiter: MultiLimiter, metrics: GatewayMetrics,
    verifiers: Verifiers, controls: IncidentControls, clock: Clock,
) -> list[Policy]:
    """The policies ``route`` runs, in the order the chain will run them."""
    # Incident blocks on addresses first: a blocked client costs one table lookup and nothing else.
    policies: list[Policy] = [AddressBlockPolicy(controls, clock)]
    body_rules: list[CelRule] = []
    shield = IpShieldPolicy(
        allow_sets=[config.shield.allow, route.shield.allow if route.shield else []],
        deny=[*config.shield.deny, *(route.shield.deny if route.shield else [])],
    )
    if shield.active:
        policies.append(shield)
    if route.cors is not None:
        # After the IP shield (a denied network gets no preflight answer), before authentication
        # (browsers send preflights without credentials).
        policies.append(CorsPolicy(route.cors))
    if isinstance(route.auth, AuthConfig):
        jwt_cfg = route.auth.jwt
        assertion_cfg = route.auth.jwt_assertion
        introspection_cfg = route.auth.introspection
        failed_auth = verifiers.failed_auth or FailedAuthShield(
            failed_auth_rule(config.shield.failed_auth_rate), limiter, SystemClock()
        )
        bearer: AuthenticationPolicy | None = None
        a = route.auth
        if (a.api_key is not None or jwt_cfg is not None or a.signature is not None or a.webhook_signature is not None
                or introspection_cfg is not None or assertion_cfg is not None):
            bearer = AuthenticationPolicy(
                api_key=a.api_key,
                key_verifier=verifiers.keys if a.api_key else None,
                jwt_verifier=verifiers.jwt if jwt_cfg or assertion_cfg else None,
                accept_jwt=jwt_cfg is not None,
                jwt_issuers=frozenset(jwt_cfg.issuers) if jwt_cfg and jwt_cfg.issuers else None,
                shield=config.shield, limiter=limiter, metrics=metrics, failed_auth=failed_auth,
                signature=a.signature, signature_verifier=verifiers.signatures if a.signature else None,
                webhook=a.webhook_signature, route=route.name,
                webhook_verifier=verifiers.webhooks if a.webhook_signature else None,
                introspector=verifiers.introspectors.get(introspection_cfg.issuer) if introspection_cfg else None,
                accept_introspection=introspection_cfg is not None,
                jwt_assertion=JwtAssertion(
                    header=assertion_cfg.header.encode(), issuers=frozenset(assertion_cfg.issuers) or None,
                    trusted_peers=ClientAddressResolver(assertion_cfg.trusted_peers or config.trusted_proxies),
                ) if assertion_cfg else None,
            )
        mtls = a.mtls
        if mtls is not None:
            policies.append(MtlsPolicy(
                mapper=CertMapper(mtls.rules),
                xfcc=XfccTrust(config.xfcc) if mtls.accept_xfcc and config.xfcc is not None else None,
                other=bearer, require_all=a.require == "all", failed_auth=failed_auth, metrics=metrics,
            ))
        elif bearer is not None:  # AuthConfig names at least one method
            policies.append(bearer)
        policies.append(CallerBlockPolicy(controls, clock))  # blocked consumers and keys, once known
        if route.authorize is not None:
            inputs = RuleInputs(route.authorize.headers, route.authorize.query, clock)
            rules, body_rules = compile_rules(route.authorize)
            policies.append(AuthorizePolicy(route.authorize, rules, inputs))
            step_up = StepUpPolicy(route.authorize, clock)
            if step_up.active:
                policies.append(step_up)
    limits = [*config.rate_limits, *route.rate_limits]
    if route.is_public:
        limits = [lim for lim in limits if lim.key != "consumer"]
    if limits:
        policies.append(RateLimitPolicy(limits, route=route.name, limiter=limiter, metrics=metrics,
                                        controls=controls, clock=clock))
    request = effective_request(config, route)
    if request.json_body is not None or request.content_types:
        policies.append(BodyPolicy(request))
    if body_rules:  # after BodyPolicy: the body is read and is one unambiguous JSON document
        policies.append(BodyRulesPolicy(body_rules, inputs))
    if route.prompt_screening is not None:
        policies.append(PromptScreeningPolicy(screen_rules(route.prompt_screening),
                                              max_body_bytes=request.max_body_bytes or _PROMPT_BODY_BYTES))
    return policies


def _build_verifiers(config: GatewayConfig, services: GatewayServices) -> Verifiers:
    keys = None
    if config.keys is not None:
        keys = ApiKeyVerifier(
            services.store, pepper=config.keys.pepper.get_secret_value().encode(), clock=services.clock,
            cache_ttl_s=config.keys.cache_ttl, stale_if_error_s=config.keys.stale_if_error,
        )
    jwt = JwtVerifier(config.jwt_issuers, clock=services.clock) if config.jwt_issuers else None
    failed_auth = FailedAuthShield(failed_auth_rule(config.shield.failed_auth_rate), services.limiter, services.clock)
    introspectors = {
        issuer.name: _introspector(issuer, issuer.introspection, jwt, services)
        for issuer in config.jwt_issuers if issuer.introspection is not None and jwt is not None
    }
    if services.nonces is None:  # kept on the services: a reload must not forget the nonces spent
        services.nonces = services.shared.nonces if services.shared is not None else MemoryNonceStore(services.clock)
    keyring = SigningKeyring(services.store, services.vault, clock=services.clock,
                             cache_ttl_s=config.signing_keys.cache_ttl)
    signatures = SignatureVerifier(keyring, services.nonces, clock=services.clock)
    webhooks = WebhookVerifier(services.vault, services.nonces, clock=services.clock,
                               cache_ttl_s=config.signing_keys.cache_ttl)
    return Verifiers(keys=keys, jwt=jwt, failed_auth=failed_auth, signatures=signatures, webhooks=webhooks,
                     introspectors=introspectors)


def _introspector(
    issuer: JwtIssuerConfig, cfg: IntrospectionConfig, jwt: JwtVerifier, services: GatewayServices
) -> TokenIntrospector:
    """An issuer's introspection client, on the verifier's HTTP session and discovery document; a
    ``{secret:name}`` client secret is read from the vault at each call (rotation needs no reload)."""
    secret = cfg.client_secret.get_secret_value()
    reference = SECRET_REFERENCE.fullmatch(secret)

    async def client_secret() -> str:
        return await services.vault.reveal(reference.group(1)) if reference is not None else secret

    settings = IntrospectionSettings(
        issuer_name=issuer.name, issuer=issuer.issuer, endpoint=cfg.endpoint, client_id=cfg.client_id,
        audiences=tuple(issuer.audiences), required_claims=tuple(issuer.required_claims),
        claim_names=ClaimNames(issuer.consumer_claim, issuer.scopes_claim, issuer.roles_claim),
        leeway_s=issuer.leeway, timeout_s=cfg.timeout, cache_ttl_s=cfg.cache_ttl,
        negative_cache_ttl_s=cfg.negative_cache_ttl, cache_size=cfg.cache_size,
        max_response_bytes=cfg.max_response_bytes,
    )
    return TokenIntrospector(settings, clock=services.clock, session_factory=jwt.http_session,
                             client_secret=client_secret, discovery=jwt.discovery(issuer.name))


def build_runtime(config: GatewayConfig, services: GatewayServices) -> GatewayRuntime:
    """Compile everything ``config`` describes. Raises only for programming errors: the config is valid."""
    verifiers = _build_verifiers(config, services)
    upstreams = _upstreams(config)
    tls = config.listen.tls
    server_tls = None
    if tls is not None and config.listen.server == "portcullis":
        server_tls = listener_context(tls, where="listen.tls")  # re-read on every reload
    routes: dict[str, CompiledRoute] = {}
    for route in config.routes:
        upstream_cfg = config.upstreams[route.upstream]
        parts = urlsplit(upstream_cfg.url)
        request = effective_request(config, route)
        routes[route.name] = CompiledRoute(
            name=route.name,
            chain=PolicyChain(plan_chain(
                config, route, limiter=services.limiter, metrics=services.metrics, verifiers=verifiers,
                controls=services.controls, clock=services.clock,
            )),
            upstream=upstreams[route.upstream],
            timeouts=Timeouts(upstream_cfg.connect_timeout, upstream_cfg.read_timeout, upstream_cfg.total_timeout),
            forward=ForwardHeaders(
                upstream_host=None if upstream_cfg.preserve_host else parts.netloc,
                forward_identity=route.forward_identity,
                rules=RequestHeaderRules(config.request, route.request),
            ),
            max_body_bytes=request.max_body_bytes,
            stream_body=request.body_buffering == "streamed",
            template=route.path,
            upstream_address=UpstreamAddress(
                parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80), upstream_cfg.url),
        )
    router_routes = list(config.routes)
    egress = None
    # The pipeline serves the HTTP door and the proxy door: built when either is on.
    if config.egress is not None and (config.egress.entry.enabled or config.egress.proxy is not None):
        metrics = services.metrics

        def breaker_moved(route: str, before: BreakerState, after: BreakerState) -> None:
            metrics.egress_breaker_transitions.labels(route, after.value).inc()
            log.warning("egress breaker %s: %s -> %s", route, before.value, after.value)
            services.audit.submit(AuditRecord.create(
                clock=services.clock, request_id=random_hex(128), client_ip="gateway", consumer_id=None,
                key_id=None, method="-", route=EGRESS_ROUTE_NAME, path=f"/{route}", query=None, status=0,
                decision=f"breaker:{after.value}", latency_ms=0.0, bytes_in=0, bytes_out=0, upstream_status=None,
                user_agent=None, egress={"route": route, "breaker_from": before.value, "breaker": after.value},
            ))

        door = egress_door_route(config.egress.entry)
        # One set of rules for the door: refused before its chain runs (like any route), removed
        # by the executor, which applies the same object to every call it makes.
        door_rules = RequestHeaderRules(config.request, door.request)
        egress = EgressExecutor(config.egress, vault=services.vault, resolver=services.egress_resolver,
                                clock=services.clock, on_breaker=breaker_moved, limiter=services.limiter,
                                budget_store=services.egress_budgets, header_rules=door_rules,
                                controls=services.controls, audit=services.audit.submit,
                                budget_usage=services.budget_usage, tracer=services.tracer,
                                metrics=metrics, anomaly=services.anomaly,
                                llm_reservations=services.llm_reservations,
                                audit_full=(lambda: services.audit.full) if config.audit.when_full == "shed" else None)
        for route_name, breaker in egress.breakers().items():
            metrics.egress_breaker_open.labels(route_name).set_function(_breaker_open_reader(breaker))
        if config.egress.entry.enabled:
            router_routes.append(door)
            routes[door.name] = CompiledRoute(
                name=door.name,
                chain=PolicyChain(plan_chain(config, door, limiter=services.limiter, metrics=services.metrics,
                                             verifiers=verifiers, controls=services.controls, clock=services.clock)),
                upstream=_NO_UPSTREAM, timeouts=Timeouts(1, 1, 1),
                forward=ForwardHeaders(upstream_host=None, forward_identity=False, rules=door_rules),
                max_body_bytes=config.egress.entry.max_body_bytes, handler=EgressHttpDoor(egress),
                template=door.path,
            )
    breaker_sync = None
    if egress is not None and services.shared is not None:
        breaker_sync = SharedBreakers(RedisBreakerStates(services.shared), egress.breakers())
    return GatewayRuntime(
        config=config,
        services=services,
        router=Router(router_routes),
        routes=routes,
        base_chain=PolicyChain([]),
        security_headers=SecurityHeadersPolicy(config.security_headers, tls=config.listen.tls is not None),
        client_addresses=ClientAddressResolver(config.trusted_proxies),
        upstreams=upstreams,
        key_verifier=verifiers.keys,
        jwt_verifier=verifiers.jwt,
        signing_keys=verifiers.signatures.keyring if verifiers.signatures is not None else None,
        max_header_bytes=config.listen.max_header_bytes,
        shed_when_audit_full=config.audit.when_full == "shed",
        egress=egress,
        breaker_sync=breaker_sync,
        server_tls=server_tls,
    )


def _upstreams(config: GatewayConfig) -> dict[str, Upstream]:
    """One pool per upstream; an unusable CA, client certificate or key file is a ``ConfigError``."""
    upstreams: dict[str, Upstream] = {}
    for name, u in config.upstreams.items():
        where = f"upstreams.{name}"
        client_cert = None
        if u.client_cert_file is not None and u.client_key_file is not None:
            check_private_key_file(u.client_key_file, where=f"{where}.client_key_file")
            client_cert = (u.client_cert_file, u.client_key_file)
        try:
            upstreams[name] = Http1Upstream(u.url, pool_size=u.pool_size, verify_tls=u.verify_tls, ca_file=u.ca_file,
                                            idle_timeout_s=u.idle_timeout, client_cert=client_cert)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"could not load the TLS files ({type(exc).__name__})", path=where) from exc
    return upstreams


EGRESS_ROUTE_NAME = "egress"


def egress_door_route(entry: EgressEntryConfig) -> RouteConfig:
    """The ingress route the egress door is served on: ``<prefix>/<route>/<path>``, authenticated."""
    return RouteConfig(
        name=EGRESS_ROUTE_NAME, path=f"{entry.path_prefix}/{{egress_route}}/{{egress_path:path}}",
        upstream=EGRESS_ROUTE_NAME, auth=entry.auth, authorize=entry.authorize, rate_limits=entry.rate_limits,
        request=RequestConfig(max_body_bytes=entry.max_body_bytes), forward_identity=False,
    )


class _NoUpstream:
    """The egress door's placeholder: its calls go through the executor, never here."""

    async def send(self, request: UpstreamRequest, *, timeouts: Timeouts) -> UpstreamResponse:
        raise AssertionError("the egress door has no upstream")  # pragma: no cover

    async def aclose(self) -> None:
        return None


_NO_UPSTREAM = _NoUpstream()


def _breaker_open_reader(breaker: CircuitBreaker) -> Callable[[], float]:
    """The breaker-open gauge's value, read at scrape time."""
    return lambda: float(breaker.state in (BreakerState.OPEN, BreakerState.FORCED_OPEN))


async def open_shared(cfg: SharedStateConfig, clock: Clock) -> SharedState:
    """The Redis-backed state every instance shares (not yet listening for events)."""
    return await open_shared_state(
        cfg.url, clock, key_prefix=cfg.key_prefix, instances=cfg.instances, on_failure=cfg.on_failure,
        budgets_on_failure=cfg.budgets_on_failure, timeout_s=cfg.timeout,
    )
