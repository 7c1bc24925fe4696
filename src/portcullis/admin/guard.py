"""Every admin route declares the permission it needs; the route class enforces it and audits the act.

How a route declares: ``@router.post("/keys", **needs(Permission.KEYS_WRITE, action="key.create"))``.
``needs`` puts the permission into the operation's OpenAPI (``x-permission``, so the document an
operator reads says who may call what) and documents the 401/403/429 problem answers every guarded
operation can give. ``GuardedRoute`` (the route class of every admin router) then:

- refuses with 403 ``authz.forbidden`` when the operator (set on the scope by ``admin.auth``) lacks
  the permission, and when the route declares none at all: deny by default, so a route added
  without a declaration is closed, and the role-matrix test fails until it is declared;
- writes one security event per call of a route that has an ``action`` (every route that changes
  something, and reads of the trail itself): the operator, their role and address, the path
  parameters as the target, and the outcome from the status (``ok``, ``denied``, ``refused`` for
  other 4xx, ``failed`` for 5xx). A handler adds what only it knows (the new key's id, say) with
  ``note_event``.

Public routes (the probes, and ``/metrics`` when ``admin.metrics_public``) say ``**public()``; the
authentication middleware lets exactly those through without credentials.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from portcullis.admin.problems import problem, problem_answer
from portcullis.audit.security_event import security_event
from portcullis.clock import Clock
from portcullis.errors import ErrorCode
from portcullis.identity.admin_roles import Permission

__all__ = [
    "OPERATOR_SCOPE_KEY", "PERMISSION_KEY", "PUBLIC", "GuardedRoute", "Operator", "current_operator", "needs",
    "note_event", "public", "route_permission",
]

PERMISSION_KEY = "x-permission"
ACTION_KEY = "x-audit-action"
PUBLIC = "public"
OPERATOR_SCOPE_KEY = "portcullis.operator"
_EVENT_SCOPE_KEY = "portcullis.event"
_GUARDED_ANSWERS: dict[int | str, dict[str, Any]] = {
    401: problem_answer("No valid credentials."),
    403: problem_answer("The operator's role lacks the permission, or the Origin is refused."),
    421: problem_answer("The Host header is not one this listener answers to (DNS rebinding)."),
    429: problem_answer("Too many failed authentications from this address."),
    503: problem_answer("The store is unavailable."),
}


@dataclass(frozen=True, slots=True)
class Operator:
    """Who is calling the admin API, as the authentication middleware established it.

    ``actor``: ``token:<id>`` or ``oidc:<issuer>:<subject>``. ``consumers``: what the ``*_own``
    permissions cover (a developer's own consumers).
    """

    actor: str
    role: str
    permissions: frozenset[Permission]
    consumers: frozenset[str]
    client_ip: str
    user_agent: str | None
    request_id: str

    def may(self, permission: Permission) -> bool:
        return permission in self.permissions

    def may_read(self, everything: Permission, own: Permission, consumer_id: str | None) -> bool:
        """Whether the operator may read a consumer's data: with ``everything``, or with ``own`` for
        one of their consumers."""
        return self.may(everything) or (self.may(own) and consumer_id is not None and consumer_id in self.consumers)


def needs(permission: Permission, *, action: str | None = None,
          answers: Mapping[int | str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Route decorator arguments: the permission a call needs, the security event it records
    (``action``, e.g. ``key.create``; None for reads that are not worth an event), and the route's
    own documented answers besides the ones every guarded route can give."""
    extra: dict[str, Any] = {PERMISSION_KEY: permission.value}
    if action is not None:
        extra[ACTION_KEY] = action
    return {"openapi_extra": extra, "responses": {**_GUARDED_ANSWERS, **(answers or {})}}


def public() -> dict[str, Any]:
    """Route decorator arguments for an operation served without credentials (the probes)."""
    return {"openapi_extra": {PERMISSION_KEY: PUBLIC}}


def route_permission(route: APIRoute) -> str | None:
    """What a route declared: a permission's value, ``PUBLIC``, or None (closed to everyone)."""
    declared = (route.openapi_extra or {}).get(PERMISSION_KEY)
    return declared if isinstance(declared, str) else None


def current_operator(request: Request) -> Operator:
    """The authenticated operator (a FastAPI dependency for handlers that need it)."""
    operator = request.scope.get(OPERATOR_SCOPE_KEY)
    if not isinstance(operator, Operator):  # only reachable on a public route, which must not ask
        raise RuntimeError("no operator on a guarded route")
    return operator


def note_event(request: Request, **details: Any) -> None:
    """Add details to this call's security event (ids the handler made, what it changed)."""
    request.scope.setdefault(_EVENT_SCOPE_KEY, {}).update(details)


def _outcome(status: int) -> str:
    if status < 400:
        return "ok"
    if status == 403:
        return "denied"
    return "refused" if status < 500 else "failed"


Submit = Callable[[Any], None]


class GuardedRoute(APIRoute):
    """The route class of the admin app: permission check, then the handler, then the security event.

    The app puts a ``GuardContext`` (clock, audit submit) in ``app.state.guard``; see ``admin.app``.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        declared = route_permission(self)
        if declared == PUBLIC:
            return handler
        permission = Permission(declared) if declared is not None else None
        action = (self.openapi_extra or {}).get(ACTION_KEY)

        async def guarded(request: Request) -> Response:
            context: GuardContext = request.app.state.guard
            operator = request.scope.get(OPERATOR_SCOPE_KEY)
            if not isinstance(operator, Operator):
                return self.refusal(request, ErrorCode.AUTH_MISSING_CREDENTIALS)
            if permission is None or not operator.may(permission):
                response = self.refusal(request, ErrorCode.AUTHZ_FORBIDDEN)
                context.record(request, operator, action or f"{request.method} {self.path}", response.status_code)
                return response
            response = await handler(request)
            if action is not None:
                context.record(request, operator, action, response.status_code)
            return response

        return guarded

    def refusal(self, request: Request, code: ErrorCode) -> Response:
        """The answer to a caller without an operator or the permission (the console renders a page)."""
        return problem(code, request)


@dataclass(frozen=True, slots=True)
class GuardContext:
    """What ``GuardedRoute`` needs from its app (``app.state.guard``): a clock and the audit writer's submit."""

    clock: Clock
    submit: Submit

    def record(self, request: Request, operator: Operator, action: str, status: int) -> None:
        details: dict[str, Any] = dict(request.scope.get(_EVENT_SCOPE_KEY) or {})
        target = _target(request.path_params.items())
        self.submit(security_event(
            clock=self.clock, action=action, outcome=_outcome(status), actor=operator.actor, role=operator.role,
            target=target, client_ip=operator.client_ip, request_id=operator.request_id, status=status,
            method=request.method, path=request.url.path, user_agent=operator.user_agent, details=details or None,
        ))


def _target(params: Iterable[tuple[str, Any]]) -> str | None:
    parts = [f"{k}={v}" for k, v in params]
    return ",".join(parts) if parts else None
