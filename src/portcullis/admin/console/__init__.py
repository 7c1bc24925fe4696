"""The web console: server-rendered pages on the admin listener, under ``/console``.

Why this stack: Jinja2 templates with autoescape on (``render``), one stylesheet and about sixty
lines of vanilla JavaScript in a static file (``static/console.js``, which refreshes the
overview's numbers), all served by the gateway itself. No build step, no framework, no CDN, no
external font, no inline script: a strict Content-Security-Policy (``door.CSP``) holds on every
console answer, and there is nothing to keep patched but Jinja2. A page is a function of what the
API routes already compute, so the console stays thin enough to maintain beside the API.

How it fits the admin app (``admin.app``): the console's routes are ordinary routes of the admin
FastAPI app, each declared with ``needs()`` or ``public()`` like the API's (so ``create_admin_app``
refuses an undeclared one), left out of the OpenAPI document, and of class ``ConsoleRoute``: the
console's own door (session cookie, CSRF token, Origin check; ``door``) in front of the same
``GuardedRoute`` permission check and security event as the API. The API's middleware lets
``/console`` through after its Host check and never reads the console's cookie, so a session
cannot call the JSON API, and a bearer token cannot open a console page.

Modules: ``session`` (the bounded session table on the Clock), ``form`` (urlencoded forms under a
cap), ``door`` (the checks above, the security headers), ``render`` (templates), ``signin``,
``operations`` (overview, budgets, breakers, anomalies), ``records`` (audit), ``controls`` (keys,
blocks), ``traffic`` (the overview's numbers from the metrics).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute

from portcullis.admin.auth import AdminGate
from portcullis.admin.console import controls, operations, records, signin
from portcullis.admin.console.door import PREFIX, ConsoleDoor, ConsoleHeaders
from portcullis.ingress.app import GatewayApp

__all__ = ["PREFIX", "ConsoleHeaders", "mount_console"]


def mount_console(app: FastAPI, gateway: GatewayApp, gate: AdminGate) -> list[APIRoute]:
    """Add the console's routes and state to the admin app; returns the routes (for the checks and tests)."""
    app.state.console = ConsoleDoor(gateway, gate)
    routers = [signin.router, operations.router, records.router, controls.router]
    for router in routers:
        app.include_router(router)
    return [r for router in routers for r in router.routes if isinstance(r, APIRoute)]
