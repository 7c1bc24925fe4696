"""An egress route compiled once per config load: everything a call needs, looked up by name.

Why precompute: the base URL, the guard policy, the resolver that pins, the names the route
replaces, the secrets it injects and its breaker are the same for every call; computing them per
call is work on the hot path and one more place for the doors to drift apart.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from portcullis.audit.record import AuditRecord
from portcullis.clock import Clock
from portcullis.config.egress import SECRET_REFERENCE, EgressConfig, EgressRouteConfig
from portcullis.egress.breaker import BreakerConfig, BreakerState, CircuitBreaker
from portcullis.egress.bulkhead import Bulkhead
from portcullis.egress.call.origin_check import OriginCheck
from portcullis.egress.call.phase5_client import PinnedClients
from portcullis.egress.oauth2 import ClientCredentials
from portcullis.egress.policy import route_policy, token_endpoint_policy
from portcullis.egress.priority import RoutePriority
from portcullis.egress.response_guard import ResponseLimits
from portcullis.egress.retry import FailureStreak, RetryBudget, RetryConfig
from portcullis.egress.run_mode import RouteRunModes
from portcullis.egress.ssrf import GuardPolicy, SsrfGuard
from portcullis.errors import ConfigError
from portcullis.http.headers import fold_name
from portcullis.limiting.limiter import LimitRule
from portcullis.vault import Vault

__all__ = ["CALLER_ONLY_HEADERS", "EgressRoute", "InjectedHeader", "compile_route"]

# Never sent to a third party, besides what the header rules remove (``http/header_rules.py``:
# hop-by-hop, the gateway's own headers, the default list): the caller's credentials for the
# *gateway*, its cookies, and the gateway's context headers. Folded names, so variants go too.
# The run mode and priority are the gateway's to read, never the provider's.
CALLER_ONLY_HEADERS = frozenset({b"authorization", b"cookie", b"x-api-key", b"x-workflow-id", b"x-execution-id",
                                 b"x-run-mode", b"x-priority"})

BreakerListener = Callable[[str, BreakerState, BreakerState], None]

# How header text becomes bytes on the send path: surrogateescape turns any str back into the bytes
# it was decoded from, so a value the vault or the config holds reaches the provider as written.
_TEXT, _ESCAPE = "utf-8", "surrogateescape"


@dataclass(frozen=True, slots=True)
class InjectedHeader:
    """One header the route sets, compiled at load: its wire name, and its value when the template
    names no secret (a template with ``{secret:name}`` is filled, then encoded, per call)."""

    name: bytes  # lower-case, as sent (the config lowercases and checks names)
    template: str
    secrets: tuple[str, ...]  # every ``{secret:name}`` reference, in order, repeats kept
    fixed: bytes | None  # the encoded value when ``secrets`` is empty


def _injected(route: EgressRouteConfig) -> tuple[InjectedHeader, ...]:
    out = []
    for name, template in route.headers.items():
        secrets = tuple(SECRET_REFERENCE.findall(template))
        fixed = None if secrets else template.encode(_TEXT, _ESCAPE)
        out.append(InjectedHeader(name.encode(_TEXT, _ESCAPE).lower(), template, secrets, fixed))
    return tuple(out)


@dataclass(slots=True)
class EgressRoute:
    config: EgressRouteConfig
    base: str
    origin_check: OriginCheck  # phase 1's SSRF check of ``base``: once per ``egress.origin_check_ttl``
    breaker: CircuitBreaker
    retry: RetryConfig
    retry_budget: RetryBudget
    limits: ResponseLimits
    policy: GuardPolicy
    host: str
    port: int
    secrets: tuple[str, ...]  # vault secrets its headers inject, by name, each once (for the audit)
    replaced: frozenset[bytes]  # folded names never taken from the caller: CALLER_ONLY_HEADERS, the route's
    run_modes: RouteRunModes  # which run modes the route takes, and what a full run needs
    priority: RoutePriority  # a call's class in the route's bulkhead
    streak: FailureStreak  # failed attempts in a row at the endpoint, for adaptive retry
    injected: tuple[InjectedHeader, ...] = ()  # the headers the route sets, in config order
    injected_names: frozenset[bytes] = frozenset()  # their wire names: dropped when a redirect leaves the origin
    rate_rule: LimitRule | None = None
    session: PinnedClients | None = None  # the send phase's clients, made on the first call
    oauth2: ClientCredentials | None = None  # the provider token this route gets itself (client credentials)
    bulkhead: Bulkhead | None = None  # the route's concurrency cap and priority queue, if it has one
    tls: ssl.SSLContext | None = None  # the route's own trust (``ca_file``); None: the system's

    @property
    def name(self) -> str:
        return self.config.name


def compile_route(
    config: EgressConfig, route: EgressRouteConfig, *, guard: SsrfGuard, vault: Vault, clock: Clock,
    audit: Callable[[AuditRecord], None] | None, on_breaker: BreakerListener | None,
    bulkhead: Bulkhead | None = None,
) -> EgressRoute:
    br, rt = route.breaker, route.retry
    retry = RetryConfig(max_attempts=rt.max_attempts, base_s=rt.base, cap_s=rt.cap,
                        retry_after_cap_s=rt.retry_after_cap, budget_ratio=rt.budget_ratio,
                        budget_min_per_s=rt.budget_min_per_s, adaptive_after=rt.adaptive_after)
    parts = urlsplit(route.url)
    policy = route_policy(config, route)
    oauth2 = None
    if route.oauth2 is not None:
        oauth2 = ClientCredentials(
            route.name, route.oauth2, guard=guard, vault=vault, clock=clock, audit=audit,
            policy=token_endpoint_policy(config, route, route.oauth2.token_url),
        )
    injected = _injected(route)
    header_secrets = tuple(n for header in injected for n in header.secrets)
    return EgressRoute(
        config=route,
        base=route.url.rstrip("/"),
        origin_check=OriginCheck(route.url.rstrip("/"), guard, policy, clock, config.origin_check_ttl,
                                 lookup_timeout_s=route.connect_timeout),
        breaker=CircuitBreaker(route.name, BreakerConfig(
            failure_rate=br.failure_rate, slow_call_rate=br.slow_call_rate, slow_call_s=br.slow_call,
            min_calls=br.min_calls, window_s=br.window, window_calls=br.window_calls, open_s=br.open_for,
            half_open_probes=br.half_open_probes,
        ), clock, on_breaker),
        retry=retry,
        retry_budget=RetryBudget(retry, clock),
        limits=ResponseLimits(max_bytes=route.max_response_bytes, max_decoded_bytes=route.max_decoded_bytes,
                              content_types=tuple(route.content_types)),
        policy=policy,
        host=parts.hostname or "",
        port=parts.port or (443 if parts.scheme == "https" else 80),
        secrets=tuple(dict.fromkeys(header_secrets + ((oauth2.secret_name,) if oauth2 is not None else ()))),
        oauth2=oauth2,
        replaced=CALLER_ONLY_HEADERS | {fold_name(name.encode("latin-1")) for name in route.headers},
        rate_rule=LimitRule(name=f"egress:{route.name}", windows=tuple(route.rate_limits), burst=route.burst)
        if route.rate_limits else None,
        run_modes=RouteRunModes(route, config.run_modes),
        priority=RoutePriority(config, route),
        bulkhead=bulkhead,
        streak=FailureStreak(rt.adaptive_after),
        injected=injected,
        injected_names=frozenset(header.name for header in injected),
        tls=_trust(route),
    )


def _trust(route: EgressRouteConfig) -> ssl.SSLContext | None:
    """A verifying client context trusting only the route's ``ca_file`` (``None``: the system's store)."""
    if route.ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=route.ca_file)
    except (OSError, ssl.SSLError) as exc:
        where = f"egress.routes.{route.name}.ca_file"
        raise ConfigError(f"cannot load the CA file: {type(exc).__name__}", path=where) from None

