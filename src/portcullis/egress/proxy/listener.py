"""``ProxyListener``: the proxy door's socket, its connection caps, and a bounded drain.

Why ``asyncio.start_server`` (streams) rather than the API listener's protocol: a proxy
connection turns into a tunnel or a TLS session after ``CONNECT``, and streams hand the socket
over as it is (``StreamWriter.start_tls`` upgrades it in place for interception). The bounds are
the API listener's: ``ServerLimits`` for sizes and times, ``ConnectionCaps`` for descriptors
(503 problem document beyond a cap, recorded through the backend like every refusal).

What it refuses to do: install signal handlers, listen before it is asked, or wait forever on stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from portcullis.clock import Clock
from portcullis.egress.proxy.answer import Problem, render_problem_bytes
from portcullis.egress.proxy.authority import CertificateAuthority
from portcullis.egress.proxy.base import ProxyBackend
from portcullis.egress.proxy.door import ProxyDoor
from portcullis.egress.proxy.exchange import ProxyDoorSettings
from portcullis.errors import ErrorCode
from portcullis.server.caps import ConnectionCaps
from portcullis.server.refusal import new_refusal
from portcullis.server.scope import socket_address

__all__ = ["ProxyListener"]

log = logging.getLogger("portcullis.egress.proxy")


class ProxyListener:
    """One listening socket for the proxy door."""

    def __init__(self, backend: ProxyBackend, settings: ProxyDoorSettings, *, clock: Clock,
                 authority: CertificateAuthority | None = None) -> None:
        self._backend = backend
        self._settings = settings
        self._door = ProxyDoor(backend, settings, clock=clock, authority=authority)
        self._authority = authority
        limits = settings.limits
        self._caps = ConnectionCaps(limits.max_connections, limits.max_connections_per_ip)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, limit=self._settings.splice.chunk,
                                                  reuse_address=True, backlog=1024)

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def open_connections(self) -> int:
        return len(self._tasks)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        address = socket_address(writer.get_extra_info("peername"))
        peer = address[0] if address is not None else ""
        refused = self._caps.admit(peer)
        if refused is not None:
            refusal = new_refusal(ErrorCode.SERVICE_UNAVAILABLE, refused, "connection_cap", peer=peer or None,
                                  scheme="http", duration_s=0.0)
            extra = self._backend.refused(refusal)
            writer.write(render_problem_bytes(Problem(ErrorCode.SERVICE_UNAVAILABLE,
                                                      ((b"retry-after", b"1"), *extra)), refusal.request_id))
            writer.transport.close()
            return
        self._tasks.add(task)
        try:
            await self._door.handle(reader, writer, peer)
        except Exception:
            log.exception("proxy connection failed peer=%s", peer)
            writer.transport.abort()
        finally:
            self._tasks.discard(task)
            self._caps.release(peer)

    async def stop(self) -> None:
        """Stop accepting; let connections finish within ``graceful_timeout``; then cut them."""
        if self._server is not None:
            self._server.close()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self._settings.limits.graceful_timeout)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(BaseException):
                    await task
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()
        if self._authority is not None:
            await asyncio.to_thread(self._authority.close)  # its private directory of passing leaf files
