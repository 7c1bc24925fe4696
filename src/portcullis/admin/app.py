"""The admin listener: the admin API behind authentication, roles and a security event per act.

Why a separate listener (default 127.0.0.1): operational endpoints must never be reachable on the
public API port. What guards it, in the order a request meets it:

- ``admin.auth.AdminAuthenticator`` (middleware): Host and Origin allow-lists, the failed-auth
  throttle, then an admin token or an operator JWT; everything but the public probes needs one.
- ``admin.guard.GuardedRoute`` (every route's class): the permission the route declares, deny by
  default; one security event per act.
- The routers in ``admin/routes/``, one per resource.
- The web console (``admin/console/``, under ``/console`` with ``admin.console.enabled``): its own
  door (session cookie, CSRF token) in front of the same permission check and security events.

Errors are RFC 9457 problem documents (``admin.problems``), like the API listener's, with an error
code and the request id that ``X-Request-Id`` and the security event carry too. An unreachable
store is a 503 ``store.unavailable`` with Retry-After: with PostgreSQL down, keys cannot be created
or revoked, while the gateway keeps serving the keys it has cached.

``create_admin_app`` refuses to build an app in which any route declares no permission, so a route
added without one fails every test that builds the app, not just the role matrix.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from portcullis import __version__
from portcullis.admin.auth import AdminAuthenticator, AdminGate
from portcullis.admin.console import PREFIX as CONSOLE_PREFIX
from portcullis.admin.console import ConsoleHeaders, mount_console
from portcullis.admin.guard import PERMISSION_KEY, PUBLIC, GuardContext, GuardedRoute, route_permission
from portcullis.admin.problems import problem, problem_answer
from portcullis.admin.routes import anomalies, audit, config, controls, egress, keys, secrets, signing_keys, tokens
from portcullis.admin.routes.probes import probes_router
from portcullis.errors import STORE_RETRY_AFTER_S, ErrorCode, StoreUnavailable
from portcullis.gateway.reload import Reloader
from portcullis.identity.admin_tokens import AdminTokenVerifier
from portcullis.ingress.app import GatewayApp

__all__ = ["create_admin_app"]

log = logging.getLogger("portcullis.admin")



def create_admin_app(gateway: GatewayApp, reloader: Reloader | None = None) -> FastAPI:
    runtime = gateway.runtime
    app = FastAPI(title="Portcullis admin", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.router.route_class = GuardedRoute
    app.state.gateway = gateway
    app.state.reloader = reloader
    app.state.guard = GuardContext(clock=runtime.clock, submit=lambda record: gateway.runtime.services.audit.submit(
        record))

    @app.exception_handler(StoreUnavailable)
    async def store_down(request: Request, exc: StoreUnavailable) -> Response:
        log.warning("admin: store unavailable (%s)", exc)
        return problem(ErrorCode.STORE_UNAVAILABLE, request, retry_after_s=STORE_RETRY_AFTER_S)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> Response:
        return problem(ErrorCode.REQUEST_MALFORMED, request, "; ".join(
            ".".join(str(p) for p in e.get("loc", ())) + ": " + str(e.get("msg", "")) for e in exc.errors()
        )[:500])

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow")
            return problem(ErrorCode.METHOD_NOT_ALLOWED, request,
                           extra=[(b"allow", allow.encode())] if allow else None)
        return problem(ErrorCode.ADMIN_NOT_FOUND if exc.status_code == 404 else ErrorCode.REQUEST_MALFORMED, request)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        log.error("admin: unexpected error", exc_info=exc)
        return problem(ErrorCode.INTERNAL, request)

    routers = [probes_router(metrics_public=runtime.config.admin.metrics_public), keys.router, signing_keys.router,
               tokens.router, secrets.router, egress.router, config.router, controls.router, audit.router,
               anomalies.router]
    for router in routers:
        app.include_router(router)
    routes = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]
    app.state.routes = routes  # what the role-matrix test walks
    app.state.tokens = AdminTokenVerifier(runtime.services.store, clock=runtime.clock,
                                          stale_if_error_s=runtime.config.stale_if_error_s)
    gate = AdminGate(gateway, app.state.tokens)
    console = runtime.config.admin.console.enabled
    app.state.console_routes = mount_console(app, gateway, gate) if console else []  # the console's matrix test
    undeclared = [f"{sorted(r.methods or ())} {r.path}" for r in [*routes, *app.state.console_routes]
                  if route_permission(r) is None]
    if undeclared:
        raise RuntimeError(f"admin routes without a declared permission: {undeclared}")
    public_paths = [r.path for r in routes if route_permission(r) == PUBLIC]
    app.openapi = lambda: _openapi_document(app, routes)  # type: ignore[method-assign]
    app.add_middleware(AdminAuthenticator, gateway=gateway, gate=gate, public_paths=public_paths,
                       own_door=CONSOLE_PREFIX if console else None)
    if console:
        app.add_middleware(ConsoleHeaders)
    return app


def _openapi_document(app: FastAPI, routes: list[APIRoute]) -> dict[str, Any]:
    """FastAPI's document, corrected to say what this API sends: a malformed parameter or body is a
    400 problem document (not FastAPI's 422 validation body), and every guarded operation takes a
    bearer token (an admin token or an operator JWT)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(title=app.title, version=app.version, routes=routes,
                           description="The Portcullis admin API. Every operation but the probes needs "
                           "`Authorization: Bearer <admin token or operator JWT>`; `x-permission` names what the "
                           "caller's role must grant.")
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            answers = operation.setdefault("responses", {})
            if "HTTPValidationError" in str(answers.get("422", "")):
                del answers["422"]
            if operation.get("parameters") or operation.get("requestBody"):
                answers.setdefault("400", problem_answer("A parameter or the body does not match this document."))
            if operation.get(PERMISSION_KEY) != PUBLIC:
                operation["security"] = [{"bearer": []}]
    components = document.setdefault("components", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(name, None)
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    app.openapi_schema = document
    return document
