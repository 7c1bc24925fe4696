"""``serve_app``: an aiohttp application served on 127.0.0.1, on a port the kernel picks.

Why: tests of Portcullis talk to real servers (providers, JWKS endpoints, backends), never mocked
clients, and each of them needs the same five lines of runner set-up and clean-up. One helper keeps
them on loopback and always cleaned up.

What it refuses to do: listen anywhere but 127.0.0.1.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

__all__ = ["catch_all", "serve_app"]


@asynccontextmanager
async def serve_app(app: web.Application, *, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """Serve ``app`` until the block ends; yields the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def catch_all(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.Application:
    """An application that sends every method and path to ``handler``."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app
