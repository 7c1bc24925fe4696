"""One egress call, end to end: route, guard, budgets, breaker, credentials, send, limits, retries.

Why one composer: the HTTP entry point (``/egress/<route>/…``) and the in-process httpx transport
must apply exactly the same policy, so both hand an ``EgressRequest`` to ``EgressExecutor.call``.

Order, and why:
1. a caller header the rules refuse (``reject_headers``) ends the call (400) before anything is
   looked up or spent, as on an ingress route; an incident block on the call's workflow, user or
   execution ends it (403 ``access.blocked``, from the in-memory snapshot: no I/O), for both doors
   alike; the route must exist and allow the method; the
   path is canonicalised (the same canonicaliser as ingress) and appended to the route's base URL,
   so ``..`` cannot climb out of it;
2. the SSRF guard checks the URL under the route's policy (scheme, port, host lists);
3. the endpoint's rate limits (scaled by an emergency factor on the route or the user, if any),
   then the budgets, are spent (each all or nothing) before anything is sent;
4. the caller's headers pass the ingress rules (``http/header_rules.py``: hop-by-hop, the gateway's
   own, the default list, the configured lists), so a provider that honours ``X-HTTP-Method-Override``
   cannot run a method the route does not allow; its credentials for the *gateway* (Authorization,
   API-key headers, cookies) go too; the route's headers are set, ``{secret:name}`` filled now, and
   the vault read is one ``secret.read`` security event per call (not per header);
5. each attempt asks the breaker first (never retry into an open breaker), connects through the
   guarded resolver (resolve-then-pin), follows redirects only as far as the route allows (each
   hop guarded again, credentials dropped when the origin changes), and reads the answer within
   the response limits;
6. failures (5xx, 429, timeouts, connection errors) are retried only when safe, after a jittered or
   provider-requested wait, while the retry budget and the total timeout allow.

Errors leave as Portcullis errors with fixed reasons and no chained third-party exception: an
aiohttp error can carry the request's headers, and with them an injected credential.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import aiohttp
import yarl

from portcullis.audit.record import AuditRecord
from portcullis.audit.security_event import security_event
from portcullis.clock import Clock
from portcullis.config.egress import SECRET_REFERENCE, EgressConfig, EgressRouteConfig, path_matches
from portcullis.controls.model import BlockKind
from portcullis.controls.service import IncidentControls
from portcullis.egress.breaker import BreakerConfig, BreakerState, CircuitBreaker, is_failure
from portcullis.egress.budget_usage import BudgetUsage
from portcullis.egress.budgets import (
    BudgetCounterStore,
    BudgetDecision,
    BudgetLimits,
    Budgets,
    CallContext,
    MemoryBudgetStore,
)
from portcullis.egress.oauth2 import ClientCredentials
from portcullis.egress.pinning import BlockedDestination, GuardedResolver
from portcullis.egress.policy import route_policy, token_endpoint_policy
from portcullis.egress.response_guard import ResponseLimits, ResponseRefused, check_content_type, read_limited
from portcullis.egress.retry import RetryBudget, RetryConfig, may_retry_request, retry_delay_s
from portcullis.egress.ssrf import GuardPolicy, Resolver, SsrfGuard
from portcullis.errors import (
    Blocked,
    BudgetExhausted,
    CircuitOpen,
    ClientError,
    EgressDenied,
    MalformedRequest,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from portcullis.http.header_rules import RequestHeaderRules
from portcullis.http.headers import HOP_BY_HOP, RawHeaders, fold_name
from portcullis.http.target import canonicalize_target
from portcullis.limiting.limiter import LimitRule, MultiLimiter
from portcullis.observability.tracing import ClientTrace, PassThroughTracer, ServerTrace, Tracer
from portcullis.stores.memory import MemoryCounterStore
from portcullis.vault import Vault

__all__ = ["CALLER_ONLY_HEADERS", "EgressExecutor", "EgressRequest", "EgressResult"]

# Never sent to a third party, besides what the header rules remove (``http/header_rules.py``:
# hop-by-hop, the gateway's own headers, the default list): the caller's credentials for the
# *gateway*, its cookies, and the gateway's context headers. Folded names, so variants go too.
CALLER_ONLY_HEADERS = frozenset({b"authorization", b"cookie", b"x-api-key", b"x-workflow-id", b"x-execution-id"})
# The provider's hop-by-hop headers end here; its cookies are not the caller's business.
_RESPONSE_DROP = frozenset({name.decode() for name in HOP_BY_HOP} | {"set-cookie"})
# Header text crosses as str (aiohttp's and httpx's type); the rules compare bytes. UTF-8 with
# surrogateescape turns any str into bytes and back unchanged, whichever door decoded it how.
_TEXT, _ESCAPE = "utf-8", "surrogateescape"


@dataclass(frozen=True, slots=True)
class EgressRequest:
    route: str
    method: str
    path_and_query: str  # relative to the route's base URL, e.g. "/repos/acme/app?state=open"
    context: CallContext
    headers: list[tuple[str, str]] = field(default_factory=list)  # the caller's, as sent: filtered here
    body: bytes | None = None
    request_id: str = ""  # the door's, for the security events this call causes
    client_ip: str = "in-process"  # the caller's address at the HTTP door
    trace: ServerTrace | None = None  # the door's request span; None: in-process (the caller's current span)


@dataclass(frozen=True, slots=True)
class EgressResult:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    attempts: int
    budget: BudgetDecision
    breaker: BreakerState
    host: str = ""
    cost: float = 0.0
    secrets: tuple[str, ...] = ()  # vault secrets injected into the call, by name (for the audit)
    trace_id: str | None = None  # the trace of the last attempt's traceparent, if it carried one


@dataclass(slots=True)
class _Route:
    config: EgressRouteConfig
    base: str
    breaker: CircuitBreaker
    retry: RetryConfig
    retry_budget: RetryBudget
    limits: ResponseLimits
    policy: GuardPolicy
    connector_policy: GuardedResolver
    host: str
    port: int
    secrets: tuple[str, ...]  # vault secrets its headers inject, by name (for the audit)
    replaced: frozenset[bytes]  # folded names never taken from the caller: CALLER_ONLY_HEADERS, the route's
    rate_rule: LimitRule | None = None
    session: aiohttp.ClientSession | None = None
    oauth2: ClientCredentials | None = None  # the provider token this route gets itself (client credentials)


class EgressExecutor:
    """Executes egress calls for every route of one ``egress:`` config."""

    def __init__(
        self, config: EgressConfig, *, vault: Vault, resolver: Resolver, clock: Clock,
        budget_store: BudgetCounterStore | None = None, rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_breaker: Callable[[str, BreakerState, BreakerState], None] | None = None,
        limiter: MultiLimiter | None = None, header_rules: RequestHeaderRules | None = None,
        controls: IncidentControls | None = None, audit: Callable[[AuditRecord], None] | None = None,
        budget_usage: BudgetUsage | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        """``header_rules`` decide which caller headers reach a provider, for every door: by default
        the default list (``RequestHeaderRules.defaults()``); the gateway passes its egress door's
        rules (the global ``request`` lists), so both of its doors apply the same ones. ``controls``:
        the incident controls enforced on every call (blocks, emergency factors); ``audit``: where the
        ``secret.read`` security events go (the audit writer's ``submit``); ``budget_usage``: the
        tracker behind the budget gauges, configured here with this config's budgets; ``tracer``: a
        client span per attempt, whose ``traceparent`` the provider receives (default: tracing off)."""
        self._config = config
        self._tracer: Tracer = tracer or PassThroughTracer()
        self._controls = controls
        self._audit = audit
        self._header_rules = header_rules or RequestHeaderRules.defaults()
        self._limiter = limiter or MultiLimiter(MemoryCounterStore(), clock)
        self._vault = vault
        self._clock = clock
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._guard = SsrfGuard(resolver)
        b = config.budgets
        self._budgets = Budgets(BudgetLimits(
            execution_calls=b.execution_calls, execution_window_s=b.execution_window,
            execution_cost=b.execution_cost, workflow_calls_per_hour=b.workflow_calls_per_hour,
            workflow_calls_per_day=b.workflow_calls_per_day, user_calls_per_day=b.user_calls_per_day,
            user_cost_per_day=b.user_cost_per_day,
            endpoint_calls_per_workflow_day={r.name: r.calls_per_workflow_day for r in config.routes
                                             if r.calls_per_workflow_day is not None},
        ), budget_store or MemoryBudgetStore(), clock, budget_usage)
        self._routes = {r.name: self._compile(r, on_breaker) for r in config.routes}
        if budget_usage is not None:
            budget_usage.configure(self._budgets.limits_by_route(self._routes), top_n=b.top_burners)

    def _compile(
        self, route: EgressRouteConfig, on_breaker: Callable[[str, BreakerState, BreakerState], None] | None
    ) -> _Route:
        br, rt = route.breaker, route.retry
        retry = RetryConfig(max_attempts=rt.max_attempts, base_s=rt.base, cap_s=rt.cap,
                            retry_after_cap_s=rt.retry_after_cap, budget_ratio=rt.budget_ratio,
                            budget_min_per_s=rt.budget_min_per_s)
        parts = urlsplit(route.url)
        policy = route_policy(self._config, route)
        oauth2 = None
        if route.oauth2 is not None:
            oauth2 = ClientCredentials(
                route.name, route.oauth2, guard=self._guard, vault=self._vault, clock=self._clock, audit=self._audit,
                policy=token_endpoint_policy(self._config, route, route.oauth2.token_url),
            )
        header_secrets = tuple(n for template in route.headers.values() for n in SECRET_REFERENCE.findall(template))
        return _Route(
            config=route,
            base=route.url.rstrip("/"),
            breaker=CircuitBreaker(route.name, BreakerConfig(
                failure_rate=br.failure_rate, slow_call_rate=br.slow_call_rate, slow_call_s=br.slow_call,
                min_calls=br.min_calls, window_s=br.window, window_calls=br.window_calls, open_s=br.open_for,
                half_open_probes=br.half_open_probes,
            ), self._clock, on_breaker),
            retry=retry,
            retry_budget=RetryBudget(retry, self._clock),
            limits=ResponseLimits(max_bytes=route.max_response_bytes, max_decoded_bytes=route.max_decoded_bytes,
                                  content_types=tuple(route.content_types)),
            policy=policy,
            connector_policy=GuardedResolver(self._guard, policy, scheme=parts.scheme),
            host=parts.hostname or "",
            port=parts.port or (443 if parts.scheme == "https" else 80),
            secrets=header_secrets + ((oauth2.secret_name,) if oauth2 is not None else ()),
            oauth2=oauth2,
            replaced=CALLER_ONLY_HEADERS | {fold_name(name.encode("latin-1")) for name in route.headers},
            rate_rule=LimitRule(name=f"egress:{route.name}", windows=tuple(route.rate_limits), burst=route.burst)
            if route.rate_limits else None,
        )

    def breaker(self, route: str) -> CircuitBreaker:
        return self._routes[route].breaker

    def has_route(self, name: str) -> bool:
        return name in self._routes

    async def budgets_remaining(self, context: CallContext, route: str) -> dict[str, float]:
        """What is left of each budget a call to ``route`` would spend from; raises ``KeyError`` for no route."""
        if route not in self._routes:
            raise KeyError(route)
        return await self._budgets.remaining(context, route)

    async def reset_budgets(self, *, workflow_id: str | None = None, execution_id: str | None = None,
                            user: str | None = None) -> list[str]:
        """An operator's reset of one execution's, workflow's or user's budget counters."""
        return await self._budgets.reset(workflow_id=workflow_id, execution_id=execution_id, user=user)

    def breakers(self) -> dict[str, CircuitBreaker]:
        """Every route's breaker, by route name (for the admin API)."""
        return {name: r.breaker for name, r in self._routes.items()}

    async def aclose(self) -> None:
        for route in self._routes.values():
            if route.oauth2 is not None:
                await route.oauth2.aclose()
            if route.session is not None:
                await route.session.close()
                route.session = None

    async def call(self, request: EgressRequest) -> EgressResult:
        caller = [(k.encode(_TEXT, _ESCAPE), v.encode(_TEXT, _ESCAPE)) for k, v in request.headers]
        refused = self._header_rules.refusal(caller)
        if refused is not None:
            # Before anything is looked up or spent, as an ingress route refuses before its chain.
            raise MalformedRequest(f"rejected_header:{refused}")
        if self._controls is not None and self._controls.snapshot.has_subject_blocks:
            self._check_blocks(self._controls, request)
        route = self._routes.get(request.route)
        if route is None:
            raise EgressDenied("unknown_route")
        cfg = route.config
        method = request.method.upper()
        if cfg.methods and method not in cfg.methods:
            raise EgressDenied("method_not_allowed")
        url, relative_path = self._url(route, request.path_and_query)
        if cfg.paths and not any(path_matches(p, relative_path) for p in cfg.paths):
            raise EgressDenied("path_not_allowed")
        verdict = await self._guard.check(url, route.policy)
        if not verdict.allowed:
            raise EgressDenied(verdict.reason)
        if route.breaker.state in (BreakerState.OPEN, BreakerState.FORCED_OPEN):
            # Fail fast before any limit or budget is spent on a call that cannot be sent.
            raise CircuitOpen(f"circuit_open:{cfg.name}", retry_after_s=route.breaker.retry_after_s())
        if route.rate_rule is not None:
            subject = request.context.workflow_id if cfg.rate_limit_per_workflow else "*"
            factor = 1.0
            if self._controls is not None and self._controls.snapshot.has_emergencies:
                factor = self._controls.snapshot.factor(cfg.name, request.context.user, self._clock.wall())
            decision = await self._limiter.consume([(route.rate_rule, subject)], factor=factor)
            if not decision.allowed:
                raise RateLimited(f"rate_limited:{route.rate_rule.name}", retry_after_s=decision.retry_after_s)
        cost = next((r.cost for r in cfg.costs if path_matches(r.path, relative_path)
                     and (not r.methods or method in r.methods)), cfg.cost)
        budget = await self._budgets.consume(request.context, cfg.name, cost)
        if not budget.allowed:
            raise BudgetExhausted(f"budget:{budget.exhausted}")
        headers = await self._headers(route, caller, request)
        return await self._attempts(route, method, url, headers, request, budget, cost, caller)

    def _check_blocks(self, controls: IncidentControls, request: EgressRequest) -> None:
        """Raise ``Blocked`` when the call's workflow, user or execution is blocked now."""
        snapshot, now, ctx = controls.snapshot, self._clock.wall(), request.context
        block = (snapshot.block(BlockKind.WORKFLOW, ctx.workflow_id, now)
                 or snapshot.block(BlockKind.USER, ctx.user, now)
                 or snapshot.block(BlockKind.EXECUTION, ctx.execution_id, now))
        if block is not None:
            controls.refused(block, client_ip=request.client_ip, request_id=request.request_id,
                             trace_id=request.trace.trace_id if request.trace is not None else None,
                             actor=f"egress:{request.route}", where="egress")
            raise Blocked(block.block_id)

    def _url(self, route: _Route, path_and_query: str) -> tuple[str, str]:
        if not path_and_query.startswith("/"):
            raise EgressDenied("path_invalid")
        try:
            target = canonicalize_target(path_and_query.encode("latin-1"), host=None)
        except (ClientError, UnicodeEncodeError):
            raise EgressDenied("path_invalid") from None
        query = target.query.decode("latin-1")
        return route.base + target.path + (f"?{query}" if query else ""), target.path

    async def _headers(self, route: _Route, caller: RawHeaders, request: EgressRequest) -> list[tuple[str, str]]:
        """The caller's headers that cross (the rules, minus its gateway credentials and the names
        the route sets), then the route's, with ``{secret:name}`` filled from the vault now."""
        out = [(k.decode(_TEXT, _ESCAPE), v.decode(_TEXT, _ESCAPE))
               for k, v in self._header_rules.crossing(caller, route.replaced)]
        for name, template in route.config.headers.items():
            value = template
            for secret_name in SECRET_REFERENCE.findall(template):
                value = value.replace(f"{{secret:{secret_name}}}", await self._vault.reveal(secret_name))
            out.append((name, value))
        if route.oauth2 is not None:
            # The token request is its own security event (on renewal); the call names the secret only.
            out.append(("Authorization", f"Bearer {await route.oauth2.token()}"))
        if route.secrets and len(route.secrets) > (route.oauth2 is not None) and self._audit is not None:
            self._secrets_read(self._audit, route, request)
        return out

    def _secrets_read(self, audit: Callable[[AuditRecord], None], route: _Route, request: EgressRequest) -> None:
        """One ``secret.read`` security event for the secrets this call had injected (seed 000
        section 7.1: who read the provider key, when, for which execution)."""
        ctx = request.context
        audit(security_event(
            clock=self._clock, action="secret.read", outcome="ok", actor=f"egress:{route.config.name}", role=None,
            target=",".join(dict.fromkeys(route.secrets)), client_ip=request.client_ip,
            request_id=request.request_id or "-", status=0, method=request.method,
            details={"execution_id": ctx.execution_id, "workflow_id": ctx.workflow_id, "user": ctx.user},
            trace_id=request.trace.trace_id if request.trace is not None else None,
        ))

    async def _attempts(
        self, route: _Route, method: str, url: str, headers: list[tuple[str, str]], request: EgressRequest,
        budget: BudgetDecision, cost: float, caller: RawHeaders,
    ) -> EgressResult:
        cfg = route.config
        deadline = self._clock.monotonic() + cfg.total_timeout
        safe = may_retry_request(method, {k.lower(): v for k, v in headers})
        route.retry_budget.request()
        attempt = 0
        renewed = False
        while True:
            attempt += 1
            permit = route.breaker.acquire()  # CircuitOpen propagates: no call, no retry into it
            started = self._clock.monotonic()
            status: int | None = None
            error: UpstreamError | None = None
            answer: tuple[int, list[tuple[str, str]], bytes] | None = None
            span = self._tracer.egress_attempt(request.trace, caller, method=method, url=url, host=route.host,
                                               port=route.port, attempt=attempt)
            try:
                answer = await self._follow(route, method, url, [*headers, *_text(span)], request.body, deadline)
                status = answer[0]
            except UpstreamError as exc:
                error = exc
            except BaseException as exc:
                route.breaker.release(permit)
                span.finish(None, type(exc).__name__)
                raise
            span.finish(status, error.code.value if error is not None else None)
            failed = is_failure(status, error=error is not None)
            route.breaker.record(permit, failed=failed, duration_s=self._clock.monotonic() - started)
            if status == 401 and route.oauth2 is not None and not renewed:
                # The provider refused our token (revoked, rotated): renew it once and send again.
                renewed = True
                headers = await self._renewed(route.oauth2, headers)
                continue
            if not failed and answer is not None:
                return self._result(route, url, answer, attempt, budget, cost, span)
            delay = self._retry_delay(route, answer, attempt, safe, deadline, error)
            if delay is None:
                if answer is not None:
                    return self._result(route, url, answer, attempt, budget, cost, span)
                assert error is not None
                raise error
            await self._sleep(delay)

    @staticmethod
    async def _renewed(oauth2: ClientCredentials, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        used = next((v for k, v in headers if k == "Authorization"), "")
        oauth2.invalidate(used.removeprefix("Bearer "))
        fresh = await oauth2.token()
        return [(k, v) for k, v in headers if k != "Authorization"] + [("Authorization", f"Bearer {fresh}")]

    @staticmethod
    def _result(
        route: _Route, url: str, answer: tuple[int, list[tuple[str, str]], bytes], attempt: int,
        budget: BudgetDecision, cost: float, span: ClientTrace,
    ) -> EgressResult:
        return EgressResult(answer[0], answer[1], answer[2], attempt, budget, route.breaker.state,
                            host=route.host, cost=cost, secrets=route.secrets, trace_id=span.trace_id)

    def _retry_delay(
        self, route: _Route, answer: tuple[int, list[tuple[str, str]], bytes] | None, attempt: int, safe: bool,
        deadline: float, error: UpstreamError | None,
    ) -> float | None:
        if not safe or attempt >= route.retry.max_attempts or isinstance(error, ResponseRefused):
            return None
        retry_after = None
        if answer is not None:
            retry_after = next((v for k, v in answer[1] if k.lower() == "retry-after"), None)
        delay = retry_delay_s(attempt, retry_after, route.retry, self._rng, self._clock.wall())
        if delay is None or self._clock.monotonic() + delay >= deadline:
            return None
        if not route.retry_budget.try_retry():
            return None
        return delay

    async def _follow(
        self, route: _Route, method: str, url: str, headers: list[tuple[str, str]], body: bytes | None,
        deadline: float,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send, and follow up to ``max_redirects`` redirects, each passing the whole guard again.

        Leaving the route's origin drops the headers the route injected (its credentials), as curl
        and requests do after CVE-2018-1000007 and CVE-2018-18074; a 303 (and a 301/302 after a
        POST) continues as a GET without a body, as browsers do.
        """
        cfg, policy = route.config, route.policy
        for hop in range(cfg.max_redirects + 1):
            answer = await self._send(route, method, url, headers, body, deadline - self._clock.monotonic())
            status, answer_headers = answer[0], answer[1]
            location = next((v for k, v in answer_headers if k.lower() == "location"), None)
            if status not in _REDIRECTS or not location or hop == cfg.max_redirects:
                return answer
            next_url = urljoin(url, location)
            verdict = await self._guard.check(next_url, policy)
            if not verdict.allowed:
                raise EgressDenied(f"redirect_{verdict.reason}")
            if _origin(next_url) != _origin(url):
                headers = [(k, v) for k, v in headers if k.lower() not in cfg.headers
                           and not (route.oauth2 is not None and k.lower() == "authorization")]
            if status == 303 or (status in (301, 302) and method == "POST"):
                method, body = "GET", None
            url = next_url
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self, route: _Route, method: str, url: str, headers: list[tuple[str, str]], body: bytes | None,
        time_left: float,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if time_left <= 0:
            raise UpstreamTimeout("egress_total_timeout")
        cfg = route.config
        timeout = aiohttp.ClientTimeout(total=time_left, sock_connect=cfg.connect_timeout, sock_read=cfg.read_timeout)
        try:
            async with self._session(route).request(
                method, yarl.URL(url, encoded=True), headers=headers, data=body, allow_redirects=False,
                timeout=timeout,
            ) as resp:
                check_content_type(resp.headers.get("Content-Type"), route.limits.content_types)
                data = await read_limited(resp.content.iter_chunked(65536), route.limits,
                                          encoding=resp.headers.get("Content-Encoding"))
                kept = [(k, v) for k, v in resp.headers.items() if k.lower() not in _RESPONSE_DROP]
                return resp.status, kept, data
        except ResponseRefused:
            raise
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedDestination):
                raise UpstreamUnavailable(f"egress_blocked:{exc.os_error.reason}") from None
            raise UpstreamUnavailable("egress_unreachable") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout("egress_timeout") from None
        except (aiohttp.ClientError, ConnectionError):
            raise UpstreamUnavailable("egress_connection_failed") from None

    def _session(self, route: _Route) -> aiohttp.ClientSession:
        if route.session is None or route.session.closed:
            route.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=route.connector_policy, use_dns_cache=False, limit=100),
                auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent",),
            )
        return route.session


_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def _text(span: ClientTrace) -> list[tuple[str, str]]:
    """The attempt's trace headers as aiohttp takes them (the caller's own never cross: the header
    rules drop both names, ``http.headers.GATEWAY_SET_HEADERS``)."""
    return [(k.decode("ascii"), v.decode("ascii")) for k, v in span.headers]


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port
