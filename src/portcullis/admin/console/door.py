"""The console's door: session cookie in, operator out, CSRF checked on every state change.

Every console route but sign-in, sign-out and the static files has ``ConsoleRoute`` as its class.
Before the route's own permission check (``GuardedRoute``, the same one and the same security
event as the API route it mirrors), the door:

1. finds the session the ``portcullis_console`` cookie names (``session``); none, idle or too old:
   a page view goes to the sign-in page (303), anything else gets 401;
2. for a POST (the only method that changes anything; a GET never does): refuses a cross-site
   request (``admin.auth.cross_origin``, with this listener's own origin allowed; ``Origin: null``
   only with ``Sec-Fetch-Site: same-origin``, which is what Chromium sends under the console's
   ``Referrer-Policy: no-referrer``), reads the form
   under a size cap (``form``) and compares its ``csrf_token`` with the session's in constant time
   (OWASP CSRF cheat sheet: synchronizer token pattern, plus the Origin check as defence in depth);
3. re-checks the session's credential through ``AdminGate`` exactly as the API checks a bearer
   token: a token revoked or expired since sign-in ends the session on this request.

Every refusal is a page with its status, and a security event through ``AdminGate``
(``console.csrf``, ``console.origin``, ``console.session``), so the console's refusals sit in the
trail beside the API's.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import Request, Response
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portcullis.admin.auth import AdminGate, cross_origin
from portcullis.admin.console.form import FormRefused, read_form
from portcullis.admin.console.render import PageRenderer
from portcullis.admin.console.session import ConsoleSession, SessionLimits, SessionStore
from portcullis.admin.guard import OPERATOR_SCOPE_KEY, PUBLIC, GuardedRoute, Operator, route_permission
from portcullis.admin.routes.probes import READY_DEADLINE_S
from portcullis.errors import ErrorCode, StoreUnavailable, Unauthenticated
from portcullis.ingress.app import GatewayApp
from portcullis.observability.readiness import ReadinessProbe

__all__ = [
    "CONSOLE_HEADERS", "PREFIX", "SESSION_COOKIE", "ConsoleDoor", "ConsoleHeaders", "ConsoleRoute", "console_form",
    "console_session",
]

log = logging.getLogger("portcullis.admin.console")

PREFIX = "/console"
SESSION_COOKIE = "portcullis_console"
_SESSION_KEY = "portcullis.console.session"
_FORM_KEY = "portcullis.console.form"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
CONSOLE_HEADERS = [
    (b"content-security-policy", CSP.encode()), (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"), (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"), (b"cross-origin-resource-policy", b"same-origin"),
]


def console_session(request: Request) -> ConsoleSession:
    """The session the door found for this request (a route behind the door only)."""
    session = request.scope.get(_SESSION_KEY)
    if not isinstance(session, ConsoleSession):
        raise RuntimeError("no console session on a console route")
    return session


def console_form(request: Request) -> Mapping[str, str]:
    """The form the door read and checked for this POST."""
    form: Mapping[str, str] = request.scope.get(_FORM_KEY) or {}
    return form


class ConsoleDoor:
    """What the console's routes share (``app.state.console``): sessions, the gate, the renderer."""

    def __init__(self, gateway: GatewayApp, gate: AdminGate) -> None:
        self.gateway = gateway
        self.gate = gate
        self.sessions = SessionStore(gateway.runtime.clock)
        self.pages = PageRenderer()
        self.probe = ReadinessProbe(deadline_s=READY_DEADLINE_S)  # one per admin app (it tracks running checks)

    def limits(self) -> SessionLimits:
        c = self.gateway.runtime.config.admin.console
        return SessionLimits(idle_s=c.idle_timeout, lifetime_s=c.lifetime, max_sessions=c.max_sessions)

    def secure(self, request: Request) -> bool:
        """Whether cookies get ``Secure``: the listener serves TLS (or says it is reached over https)."""
        return self.gateway.runtime.config.admin.tls is not None or request.url.scheme == "https"

    def own_origin(self, request: Request) -> str:
        """This listener's origin as the browser sees it (Host was checked by the middleware)."""
        scheme = "https" if self.secure(request) else "http"
        return f"{scheme}://{request.headers.get('host', '')}"

    def set_session_cookie(self, request: Request, response: Response, value: str) -> None:
        response.set_cookie(SESSION_COOKIE, value, path=PREFIX, httponly=True, secure=self.secure(request),
                            samesite="strict")

    def clear_session_cookie(self, request: Request, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path=PREFIX, httponly=True, secure=self.secure(request),
                               samesite="strict")

    def refuse(self, request: Request, status: int, reason: str, message: str, *, count: bool = False,
               operator: Operator | None = None, session: ConsoleSession | None = None) -> Response:
        """A refusal page, on record as a security event through the gate."""
        self.gate.record_refusal(request, reason, status, count=count, action=f"console.{reason}")
        return self.pages.page(request, "refused.html", status=status, operator=operator,
                               csrf_token=session.csrf_token if session else None, message=message)

    def cross_site(self, request: Request) -> bool:
        headers = request.headers
        if headers.get("origin") == "null" and headers.get("sec-fetch-site") == "same-origin":
            # Referrer-Policy: no-referrer makes Chromium send "Origin: null" with the console's own
            # forms; Fetch Metadata, which a page cannot forge, still says where the form came from.
            return False
        config = self.gateway.runtime.config.admin
        return cross_origin(headers, config.allowed_origins, own_origin=self.own_origin(request))

    async def checked_post(self, request: Request, expected_token: str) -> Mapping[str, str] | Response:
        """The form of a same-origin POST carrying ``expected_token``, or the refusal page."""
        if self.cross_site(request):
            return self.refuse(request, 403, "origin", "Refused: this form was not sent from the console.")
        try:
            form = await read_form(request)
        except FormRefused:
            return self.refuse(request, 400, "form", "Refused: the form could not be read.")
        sent = form.get("csrf_token", "")
        if not hmac.compare_digest(sent.encode(), expected_token.encode()):
            return self.refuse(request, 403, "csrf", "Refused: the form is stale or was not made by this "
                               "session. Reload the page and try again.")
        return form

    async def enter(self, request: Request) -> Response | None:
        """Let the request in (session, CSRF, operator on the scope) or return the answer refusing it."""
        cookie = request.cookies.get(SESSION_COOKIE)
        session = self.sessions.find(cookie, self.limits())
        if session is None:
            return self._to_sign_in(request, "Sign in to continue.")
        if request.method not in ("GET", "HEAD"):
            checked = await self.checked_post(request, session.csrf_token)
            if isinstance(checked, Response):
                return checked
            request.scope[_FORM_KEY] = checked
        try:
            operator = await self.gate.operator(request, session.credential)
        except Unauthenticated as exc:
            self.sessions.close(cookie)
            self.gate.record_refusal(request, exc.reason, 401, count=False, action="console.session")
            return self._to_sign_in(request, "Your session ended: the credential is no longer valid.")
        except StoreUnavailable as exc:
            log.warning("console: store unavailable during authentication (%s)", exc)
            return self.pages.page(request, "refused.html", status=503,
                                   message="The store is unavailable; try again shortly.")
        request.scope[OPERATOR_SCOPE_KEY] = operator
        request.scope[_SESSION_KEY] = session
        return None

    def _to_sign_in(self, request: Request, message: str) -> Response:
        if request.method in ("GET", "HEAD") and not request.url.path.endswith(".json"):
            response: Response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        else:
            response = self.pages.page(request, "refused.html", status=401, message=message)
        self.clear_session_cookie(request, response)
        return response


class ConsoleRoute(GuardedRoute):
    """The route class of the console: the door (above), then ``GuardedRoute``'s permission check."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        guarded = super().get_route_handler()
        if route_permission(self) == PUBLIC:
            return guarded

        async def console(request: Request) -> Response:
            door: ConsoleDoor = request.app.state.console
            refusal = await door.enter(request)
            if refusal is not None:
                return refusal
            return await guarded(request)

        return console

    def refusal(self, request: Request, code: ErrorCode) -> Response:
        door: ConsoleDoor = request.app.state.console
        operator = request.scope.get(OPERATOR_SCOPE_KEY)
        session = request.scope.get(_SESSION_KEY)
        if not isinstance(operator, Operator):
            return RedirectResponse(f"{PREFIX}/login", status_code=303)
        needed = (self.openapi_extra or {}).get("x-permission", "")
        return door.pages.page(request, "refused.html", status=403, operator=operator,
                               csrf_token=session.csrf_token if isinstance(session, ConsoleSession) else None,
                               message=f"Your role ({operator.role}) may not do this: it needs the "
                               f"{needed} permission.")


class ConsoleHeaders:
    """ASGI middleware: the console's security headers (strict CSP first) on every answer under
    ``/console``, refusals and not-found answers included."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self._app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k for k, _ in CONSOLE_HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": [*kept, *CONSOLE_HEADERS]}
            await send(message)

        await self._app(scope, receive, sending)
