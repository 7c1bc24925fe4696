"""Signing in and out of the console, the console's root, and its static files.

Sign-in takes a pasted credential: an admin token, or an operator JWT when ``admin.operators``
names an issuer (the same ``AdminGate.operator`` the API's middleware uses, so the same verifier,
roles and refusal reasons). A failed sign-in counts against the address's failed-auth budget and
is a security event, exactly like a failed API call; a throttled address gets 429 before its
credential is looked at. Why a paste form and not an OIDC authorization-code redirect: it needs
no client registration at the provider and no callback route, and an operator can paste a JWT
their provider's CLI printed; the redirect flow can come later without changing the session.

The sign-in form is protected against login CSRF (a site signing the victim in as the attacker)
by a double-submit token: a random value in a cookie scoped to ``/console/login`` and in a hidden
field, compared in constant time, plus the Origin rule. Sign-out is a POST with the session's
synchronizer token; it ends the session on the server, not just the cookie.

Every page names its icon (``/console/static/favicon.svg``): otherwise a browser asks for
``/favicon.ico``, which the API's middleware answers 401 and counts as a failed authentication,
so ten page views would throttle an operator's own address.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from starlette.responses import RedirectResponse

from portcullis.admin.console.door import PREFIX, SESSION_COOKIE, ConsoleDoor, ConsoleRoute
from portcullis.admin.guard import public
from portcullis.errors import StoreUnavailable, Unauthenticated

__all__ = ["router"]

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

_LOGIN_COOKIE = "portcullis_console_login"
_LOGIN_PATH = f"{PREFIX}/login"
_STATIC_DIR = Path(__file__).parent / "static"
_STATIC = {  # read once at import: two small files, never read from disk on the event loop
    name: (media, (_STATIC_DIR / name).read_bytes())
    for name, media in (("console.css", "text/css; charset=utf-8"), ("console.js", "text/javascript; charset=utf-8"),
                        ("favicon.svg", "image/svg+xml"))
}


def _door(request: Request) -> ConsoleDoor:
    door: ConsoleDoor = request.app.state.console
    return door


def _sign_in_page(request: Request, door: ConsoleDoor, *, status: int = 200, message: str | None = None) -> Response:
    token = secrets.token_urlsafe(32)
    response = door.pages.page(request, "login.html", status=status, login_csrf=token, message=message,
                               operators=door.gateway.runtime.config.admin.operators is not None)
    response.set_cookie(_LOGIN_COOKIE, token, path=_LOGIN_PATH, httponly=True, secure=door.secure(request),
                        samesite="strict")
    return response


@router.get(PREFIX, **public())
async def root() -> Response:
    return RedirectResponse(f"{PREFIX}/overview", status_code=303)


@router.get(_LOGIN_PATH, **public())
async def sign_in_form(request: Request) -> Response:
    door = _door(request)
    if door.sessions.find(request.cookies.get(SESSION_COOKIE), door.limits()) is not None:
        return RedirectResponse(f"{PREFIX}/overview", status_code=303)
    return _sign_in_page(request, door)


@router.post(_LOGIN_PATH, **public())
async def sign_in(request: Request) -> Response:
    door = _door(request)
    gate = door.gate
    wait = gate.throttled(request)
    if wait is not None:
        gate.record_refusal(request, "throttled", 429, count=False, outcome="throttled")
        response = _sign_in_page(request, door, status=429, message="Too many failed sign-ins from this address; "
                                 f"try again in {max(1, int(wait + 0.999))} s.")
        response.headers["retry-after"] = str(max(1, int(wait + 0.999)))
        return response
    checked = await door.checked_post(request, request.cookies.get(_LOGIN_COOKIE) or secrets.token_urlsafe(32))
    if isinstance(checked, Response):
        return checked
    credential = checked.get("credential", "").strip()
    if not credential:
        gate.record_refusal(request, "missing", 401)
        return _sign_in_page(request, door, status=401, message="Paste an admin token or an operator JWT.")
    try:
        operator = await gate.operator(request, credential)
    except Unauthenticated as exc:
        gate.record_refusal(request, exc.reason, 401)
        return _sign_in_page(request, door, status=401, message="Sign-in failed: the credential was not accepted.")
    except StoreUnavailable:
        return _sign_in_page(request, door, status=503, message="The store is unavailable; try again shortly.")
    opened = door.sessions.open(credential, operator.actor, door.limits())
    request.app.state.guard.record(request, operator, "console.login", 303)
    response = RedirectResponse(f"{PREFIX}/overview", status_code=303)
    door.set_session_cookie(request, response, opened.cookie_value)
    response.delete_cookie(_LOGIN_COOKIE, path=_LOGIN_PATH, httponly=True, secure=door.secure(request),
                           samesite="strict")
    return response


@router.post(f"{PREFIX}/logout", **public())
async def sign_out(request: Request) -> Response:
    door = _door(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    session = door.sessions.find(cookie, door.limits())
    if session is not None:
        checked = await door.checked_post(request, session.csrf_token)
        if isinstance(checked, Response):
            return checked
        door.sessions.close(cookie)
        try:
            operator = await door.gate.operator(request, session.credential)
        except (Unauthenticated, StoreUnavailable):
            operator = None
        if operator is not None:
            request.app.state.guard.record(request, operator, "console.logout", 303)
    response = RedirectResponse(_LOGIN_PATH, status_code=303)
    door.clear_session_cookie(request, response)
    return response


@router.get(PREFIX + "/static/{name}", **public())
async def static(name: Annotated[str, PathParam(pattern=r"^[a-z]+\.(css|js|svg)$")]) -> Response:
    found = _STATIC.get(name)
    if found is None:
        return Response(status_code=404)
    return Response(found[1], media_type=found[0])
