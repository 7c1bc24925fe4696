"""Who may talk to the admin listener: Host and Origin checks, a failed-auth throttle, then credentials.

Why a middleware in front of the whole app rather than a dependency per route: every path is
covered, the unknown ones included (an anonymous caller learns nothing, not even which routes
exist: 401 before 404), and nothing a route forgets can open it. Only the routes declared
``public()`` (the probes, and ``/metrics`` with ``admin.metrics_public``) pass without credentials.

In order, for every other request:

1. **Host** must name this listener (localhost, 127.0.0.1, [::1], ``admin.host``, or
   ``admin.allowed_hosts``), else 421: a DNS-rebinding page that points its own name at 127.0.0.1
   sends its own name as Host, and is refused before any credential is looked at.
2. **Origin**: a request carrying an ``Origin`` not in ``admin.allowed_origins``, or marked
   ``Sec-Fetch-Site: cross-site``, is refused with 403: a cross-site form post or fetch never acts.
   Credentials are read only from ``Authorization``, never from cookies, so a browser cannot
   attach them on its own either.
3. **Throttle**: an address with ``admin.failed_auth.max_failures`` failures in the window gets
   429 with Retry-After for the rest of it, before any store lookup.
4. **Credentials**: ``Authorization: Bearer pca_…`` is an admin token (``identity.admin_tokens``);
   any other bearer is an operator JWT when ``admin.operators`` names an issuer (verified by the
   gateway's JWT verifier, roles from a claim). The operator is put on the scope for
   ``admin.guard``.

The console (``admin.console``, under its own path prefix) is a second door: here it gets only the
Host check, then its own (session cookie, CSRF token, the same Origin rule, the same throttle and
credential check through ``AdminGate``). Its cookie is never read by this middleware, so it never
authenticates the JSON API.

Every refusal here is a problem document and a security event (``admin.auth``, outcome
``refused`` or ``throttled``, with the reason: ``missing``, ``malformed_token``, ``bad_secret``,
``host``, ``origin``…), up to twice ``max_failures`` events per address per window: a flood past
that is still refused but not recorded again, so it cannot fill the audit queue and make the
data path shed.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portcullis.admin.guard import OPERATOR_SCOPE_KEY, Operator
from portcullis.admin.problems import problem, request_id_of
from portcullis.audit.security_event import security_event
from portcullis.clock import Clock
from portcullis.config.model import AdminConfig
from portcullis.errors import ErrorCode, StoreUnavailable, Unauthenticated
from portcullis.identity.admin_roles import RoleBook, UnknownRole
from portcullis.identity.admin_tokens import AdminTokenVerifier, looks_like_admin_token
from portcullis.ingress.app import GatewayApp

__all__ = ["AdminAuthenticator", "AdminGate", "FailedAuthThrottle", "allowed_host", "cross_origin"]

log = logging.getLogger("portcullis.admin")

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# RFC 9110 section 7.2: uri-host [ ":" port ]; an IPv6 literal in brackets, a port all digits.
_HOST = re.compile(r"(?:\[([0-9a-f:.]+)\]|([a-z0-9.\-]+))(?::[0-9]{1,5})?")
_MAX_TRACKED_ADDRESSES = 10_000
# Refusals recorded per address per failed-auth window, as a multiple of max_failures: every failure
# and the first throttled answers are on record; a flood past that is answered but not recorded, so
# hammering the admin port cannot fill the audit queue (which would make the data path shed).
_RECORDS_PER_FAILURE = 2
_ANSWER_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                   (b"cache-control", b"no-store")]
_CHALLENGE = (b"www-authenticate", b'Bearer realm="portcullis-admin"')


@dataclass(frozen=True, slots=True)
class _Caller:
    client_ip: str
    user_agent: str | None
    request_id: str


@dataclass(slots=True)
class _Window:
    started: float
    failures: int


class FailedAuthThrottle:
    """Failed authentications per client address in fixed windows, in bounded memory.

    Why fixed windows: the answer an attacker sees (429 until the window ends) is simple to state
    and to test, and an operator who mistyped a token waits at most one window. The map holds at
    most ``max_addresses`` addresses; the oldest is forgotten first (an attacker with many
    addresses gets at most ``max_failures`` tries from each, which is what a per-address throttle
    can promise).
    """

    def __init__(self, *, clock: Clock, max_addresses: int = _MAX_TRACKED_ADDRESSES) -> None:
        self._clock = clock
        self._max = max_addresses
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    def retry_after(self, address: str, *, max_failures: int, window_s: float) -> float | None:
        """Seconds until ``address`` may try again, or None when it may now."""
        found = self._windows.get(address)
        if found is None:
            return None
        left = found.started + window_s - self._clock.monotonic()
        if left <= 0:
            del self._windows[address]
            return None
        return left if found.failures >= max_failures else None

    def fail(self, address: str, *, window_s: float) -> None:
        now = self._clock.monotonic()
        found = self._windows.get(address)
        if found is None or found.started + window_s <= now:
            self._windows[address] = _Window(now, 1)
            self._windows.move_to_end(address)
            while len(self._windows) > self._max:
                self._windows.popitem(last=False)
        else:
            found.failures += 1


def allowed_host(host_header: str, config: AdminConfig) -> bool:
    """Whether a Host header names this listener (the port is not compared: the socket already did)."""
    match = _HOST.fullmatch(host_header.strip().lower())
    if match is None:
        return False
    name = match.group(1) or match.group(2)
    names = set(_LOOPBACK_NAMES) | {h.lower() for h in config.allowed_hosts}
    if config.host not in ("0.0.0.0", "::", ""):
        names.add(config.host.lower().strip("[]"))
    return bool(name) and name in names


def cross_origin(headers: Mapping[str, str], allowed_origins: Iterable[str], *, own_origin: str | None = None) -> bool:
    """Whether a request comes from another site: an ``Origin`` that is neither allowed nor this
    listener's own (``own_origin``, for the console's same-origin forms), or no Origin and
    ``Sec-Fetch-Site: cross-site``. Both doors of the admin listener ask this one question."""
    origin = headers.get("origin")
    if origin is not None:
        return origin != own_origin and origin not in allowed_origins
    return headers.get("sec-fetch-site") == "cross-site"


class AdminGate:
    """What both doors of the admin listener share: the API's middleware and the console's route.

    One failed-auth throttle per address and one record of refusals, so a failed console sign-in
    counts against the same budget as a failed API call, and is recorded the same way; and one way
    from a credential (admin token or operator JWT) to an ``Operator``.
    """

    def __init__(self, gateway: GatewayApp, tokens: AdminTokenVerifier) -> None:
        self._gateway = gateway
        self._throttle = FailedAuthThrottle(clock=gateway.runtime.clock)
        self._recorded = FailedAuthThrottle(clock=gateway.runtime.clock)  # refusals put on record, per address
        self.tokens = tokens
        self._roles: tuple[object, RoleBook] | None = None

    def _role_book(self, config: AdminConfig) -> RoleBook:
        cached = self._roles
        if cached is None or cached[0] is not config.roles:  # rebuilt when a reload changes the roles
            cached = (config.roles, RoleBook(config.roles))
            self._roles = cached
        return cached[1]

    def throttled(self, request: Request) -> float | None:
        """Seconds this request's address must wait (too many failures in the window), or None."""
        limits = self._gateway.runtime.config.admin.failed_auth
        return self._throttle.retry_after(_address(request), max_failures=limits.max_failures, window_s=limits.window)

    async def operator(self, request: Request, credential: str) -> Operator:
        """The operator a credential names, checked now (revoked or expired: ``Unauthenticated``)."""
        runtime = self._gateway.runtime
        config = runtime.config.admin
        book = self._role_book(config)
        common = _Caller(_address(request), request.headers.get("user-agent"), request_id_of(request.scope))
        if looks_like_admin_token(credential):
            pepper = admin_pepper(runtime.config)
            if pepper is None:
                raise Unauthenticated("tokens_not_configured")
            record = await self.tokens.verify(credential, pepper=pepper)
            with contextlib.suppress(StoreUnavailable):  # last use is a convenience, not worth a refusal
                await runtime.services.store.touch_admin_token(record.token_id, runtime.clock.wall())
            return Operator(actor=f"token:{record.token_id}", role=record.role,
                            permissions=_permissions(book, [record.role]), consumers=record.consumers,
                            client_ip=common.client_ip, user_agent=common.user_agent, request_id=common.request_id)
        operators = config.operators
        verifier = runtime.jwt_verifier
        if operators is None or verifier is None:
            raise Unauthenticated("not_an_admin_token")
        principal = await verifier.verify(credential, allowed_issuers=frozenset({operators.issuer}))
        claims = principal.claims
        roles = _claim_list(claims.get(operators.roles_claim)) if operators.roles_claim else sorted(principal.roles)
        known = [r for r in roles if r in book.names]
        return Operator(
            actor=f"oidc:{principal.issuer}:{principal.consumer_id}", role="+".join(known) or "none",
            permissions=_permissions(book, known),
            consumers=frozenset(_claim_list(claims.get(operators.consumers_claim))),
            client_ip=common.client_ip, user_agent=common.user_agent, request_id=common.request_id,
        )

    def record_refusal(self, request: Request, reason: str, status: int, *, count: bool = True,
                       outcome: str = "refused", action: str = "admin.auth") -> None:
        """Count a refusal against the address (``count``: a failed authentication), in the metrics,
        and as a security event, up to the per-window record budget (module docstring)."""
        runtime = self._gateway.runtime
        address = _address(request)
        window = runtime.config.admin.failed_auth.window
        if count:
            self._throttle.fail(address, window_s=window)
        runtime.metrics.admin_auth_failures.labels(reason).inc()
        budget = _RECORDS_PER_FAILURE * runtime.config.admin.failed_auth.max_failures
        if self._recorded.retry_after(address, max_failures=budget, window_s=window) is not None:
            return  # this address's refusals are on record for this window already
        self._recorded.fail(address, window_s=window)
        runtime.services.audit.submit(security_event(
            clock=runtime.clock, action=action, outcome=outcome, actor="anonymous", role=None, target=None,
            client_ip=address, request_id=request_id_of(request.scope), status=status,
            method=request.method, path=request.url.path, user_agent=request.headers.get("user-agent"),
            reason=reason,
        ))


class AdminAuthenticator:
    """The ASGI middleware described in the module docstring, around the admin FastAPI app.

    ``own_door``: a path prefix (the console's) whose requests carry their own credential check:
    only the Host check applies here, and ``Authorization`` is not read for them.
    """

    def __init__(self, app: ASGIApp, *, gateway: GatewayApp, gate: AdminGate, public_paths: Iterable[str],
                 own_door: str | None = None) -> None:
        self._app = app
        self._gateway = gateway
        self._public = frozenset(public_paths)
        self._gate = gate
        self._own_door = own_door

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        send = _with_headers(send, [*_ANSWER_HEADERS, (b"x-request-id", request_id.encode())])
        door = self._own_door
        if door is not None and (scope["path"] == door or scope["path"].startswith(door + "/")):
            request = Request(scope)
            if not allowed_host(request.headers.get("host", ""), self._gateway.runtime.config.admin):
                await self._refuse(request, ErrorCode.ADMIN_HOST_REFUSED, "host", count=False)(scope, receive, send)
                return
            await self._app(scope, receive, send)
            return
        if scope["path"] in self._public:
            await self._app(scope, receive, send)
            return
        request = Request(scope)
        refusal = await self._authenticate(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self._app(scope, receive, send)

    async def _authenticate(self, request: Request) -> Callable[..., Any] | None:
        """Put the operator on the scope, or return the answer that refuses the request."""
        config = self._gateway.runtime.config.admin
        if not allowed_host(request.headers.get("host", ""), config):
            return self._refuse(request, ErrorCode.ADMIN_HOST_REFUSED, "host", count=False)
        if cross_origin(request.headers, config.allowed_origins):
            return self._refuse(request, ErrorCode.ADMIN_ORIGIN_REFUSED, "origin", count=False)
        wait = self._gate.throttled(request)
        if wait is not None:
            return self._refuse(request, ErrorCode.LIMIT_EXCEEDED, "throttled", count=False, outcome="throttled",
                                retry_after_s=max(1, int(wait + 0.999)))
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if not credential or scheme.lower() != "bearer":
            return self._refuse(request, ErrorCode.AUTH_MISSING_CREDENTIALS, "missing")
        try:
            operator = await self._gate.operator(request, credential.strip())
        except Unauthenticated as exc:
            return self._refuse(request, ErrorCode.AUTH_INVALID_CREDENTIALS, exc.reason)
        except StoreUnavailable as exc:
            log.warning("admin: store unavailable during authentication (%s)", exc)
            return self._refuse(request, ErrorCode.STORE_UNAVAILABLE, "store_unavailable", count=False,
                                outcome="failed", retry_after_s=5)
        request.scope[OPERATOR_SCOPE_KEY] = operator
        return None

    def _refuse(self, request: Request, code: ErrorCode, reason: str, *, count: bool = True,
                outcome: str = "refused", retry_after_s: int | None = None) -> Callable[..., Any]:
        extra = [_CHALLENGE] if code in (ErrorCode.AUTH_MISSING_CREDENTIALS, ErrorCode.AUTH_INVALID_CREDENTIALS) else []
        response = problem(code, request, retry_after_s=retry_after_s, extra=extra)
        self._gate.record_refusal(request, reason, response.status_code, count=count, outcome=outcome)
        return response


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def admin_pepper(config: Any) -> bytes | None:
    """The admin token pepper: ``admin.token_pepper``, else ``keys.pepper``, else None (no tokens)."""
    secret = config.admin.token_pepper or (config.keys.pepper if config.keys is not None else None)
    return secret.get_secret_value().encode() if secret is not None else None


def _permissions(book: RoleBook, roles: Iterable[str]) -> frozenset[Any]:
    granted: set[Any] = set()
    for role in roles:
        try:
            granted |= book.permissions(role)
        except UnknownRole:
            continue  # a role removed from the config since the token was made grants nothing
    return frozenset(granted)


def _claim_list(value: object) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str)]
    return []


def _with_headers(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {k.lower() for k, _ in message.get("headers", [])}
            message = {**message, "headers": [*message.get("headers", []),
                                              *((k, v) for k, v in headers if k not in present)]}
        await send(message)

    return sending
