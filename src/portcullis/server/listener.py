"""``Listener``: start the front door on a socket, and stop it gracefully.

Why: the composition root needs three things from the server and nothing more: serve an ASGI app
on a host and port (or on a socket the parent process bound, for ``listen.workers``), with TLS when
configured (the handshake bounded by ``first_byte_timeout``); tell the port; and drain on SIGTERM:
stop accepting, close idle keep-alive connections at once, let requests in flight finish within
``graceful_timeout``, then cut what is left.

What it refuses to do: install signal handlers (the caller owns the process), or wait forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl as ssl_module
from collections.abc import Callable

from portcullis.server.base import ASGIApp, BodyLimit, RefusalSink
from portcullis.server.caps import ConnectionCaps
from portcullis.server.connection import HttpConnection
from portcullis.server.limits import ServerLimits
from portcullis.server.state import ServerState

__all__ = ["Listener"]


class Listener:
    """One listening socket served by ``HttpConnection``s."""

    def __init__(
        self, app: ASGIApp, *, limits: ServerLimits, sink: RefusalSink | None = None,
        body_limit: BodyLimit | None = None, exempt_from_ip_cap: Callable[[str], bool] | None = None,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self._ssl = ssl
        caps = ConnectionCaps(limits.max_connections, limits.max_connections_per_ip, exempt_from_ip_cap)
        self._state = ServerState(app, limits, caps, sink, body_limit, "https" if ssl else "http")
        self._state.all_closed.set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, sock: socket.socket | None = None) -> None:
        state = self._state
        loop = asyncio.get_running_loop()
        # A TLS handshake comes before the connection is ours (no caps, no timer, nothing to audit):
        # first_byte_timeout bounds it too, instead of the event loop's default of 60 s.
        handshake = state.limits.first_byte_timeout if self._ssl is not None else None
        if sock is not None:
            self._server = await loop.create_server(lambda: HttpConnection(state), sock=sock, ssl=self._ssl,
                                                    ssl_handshake_timeout=handshake, backlog=2048)
        else:
            self._server = await loop.create_server(lambda: HttpConnection(state), host, port, ssl=self._ssl,
                                                    ssl_handshake_timeout=handshake, backlog=2048,
                                                    reuse_address=True)

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def open_connections(self) -> int:
        return len(self._state.connections)

    async def stop(self) -> None:
        """Stop accepting; close idle connections; wait for the rest up to ``graceful_timeout``."""
        state = self._state
        state.draining = True
        if self._server is not None:
            self._server.close()
        for connection in list(state.connections):
            connection.shutdown()
        if state.connections:
            try:
                async with asyncio.timeout(state.limits.graceful_timeout):
                    await state.all_closed.wait()
            except TimeoutError:
                for connection in list(state.connections):
                    connection.abort_now()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()
