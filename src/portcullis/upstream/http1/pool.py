"""A bounded keep-alive pool of ``Http1Connection`` for one backend address.

At most ``limit`` connections exist at once (connecting, busy or idle); a request that finds none
free waits, bounded by its connect timeout. Idle connections are reused newest first, so under
light load the same few stay warm and the rest age out; one idle longer than ``idle_timeout_s``
is closed instead of reused (backends time idle connections out too, and a reused connection
the backend has already closed costs a failed attempt).

Where a new connection goes: ``host`` itself, or, with ``addresses``, the addresses that hook
returns for this connection, tried in order (the egress door's guarded resolver: every new
connection is resolved and checked again, and goes only to an address that was checked; TLS still
sends ``server_hostname`` as SNI and verifies the certificate against it). A pooled connection
stays on the address it was opened to.

Accounting rule: every connection is counted from the moment its connect starts until it is
forgotten, exactly once (``Http1Connection.forgotten``), whether it was discarded after an
exchange, lost while idle, expired, or closed with the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from portcullis.errors import UpstreamTimeout, UpstreamUnavailable
from portcullis.upstream.http1.connection import Http1Connection

__all__ = ["AddressHook", "ConnectionPool"]

# Where to connect for one new connection: addresses (IP literals) to try in order. It may raise an
# ``UpstreamError`` (a refused destination), which ends the attempt before any connection.
AddressHook = Callable[[], Awaitable[Sequence[str]]]


class ConnectionPool:
    """Connections to ``host:port`` (over TLS when ``ssl_context`` is set)."""

    def __init__(
        self, host: str, port: int, *, limit: int, idle_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None, server_hostname: str | None = None,
        addresses: AddressHook | None = None,
    ) -> None:
        self._host = host
        self._addresses = addresses
        self._port = port
        self._limit = limit
        self._idle_timeout_s = idle_timeout_s
        self._ssl = ssl_context
        self._server_hostname = server_hostname if ssl_context is not None else None
        self._idle: list[Http1Connection] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def acquire(self, limit_s: float) -> Http1Connection:
        """A connection ready for ``begin``: an idle one if any, else a new one, else wait."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while True:
            if self._closed:
                raise UpstreamUnavailable("upstream_pool_closed")
            idle = self._idle
            while idle:
                conn = idle.pop()
                if conn.lost or loop.time() - conn.idle_since > self._idle_timeout_s:
                    conn.close()
                    self._forget(conn)
                    continue
                return conn
            if self._open < self._limit:
                return await self._connect(loop, deadline - loop.time())
            await self._wait_for_slot(loop, deadline - loop.time())

    def release(self, conn: Http1Connection) -> None:
        """Back to the idle stack if the exchange ended cleanly; otherwise dropped."""
        if conn.reusable and not self._closed:
            conn.mark_idle(asyncio.get_running_loop().time())
            self._idle.append(conn)
            self._wake_one()
        else:
            self.discard(conn)

    def discard(self, conn: Http1Connection) -> None:
        conn.abort()
        self._forget(conn)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
            self._forget(conn)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # --- internals -------------------------------------------------------------------------

    async def _connect(self, loop: asyncio.AbstractEventLoop, limit_s: float) -> Http1Connection:
        self._open += 1
        try:
            if limit_s <= 0:
                raise TimeoutError
            async with asyncio.timeout(limit_s):
                if self._addresses is None:
                    conn = await self._open_to(loop, self._host)
                else:
                    conn = await self._open_to_first(loop, await self._addresses())
        except TimeoutError:
            self._give_back_slot()
            raise UpstreamTimeout("upstream_connect_timeout") from None
        except ssl.SSLCertVerificationError as exc:
            self._give_back_slot()
            raise UpstreamUnavailable("upstream_tls_verify_failed") from exc
        except OSError as exc:
            self._give_back_slot()
            raise UpstreamUnavailable("upstream_unreachable") from exc
        except BaseException:  # an UpstreamError from the address hook included
            self._give_back_slot()
            raise
        return conn

    async def _open_to(self, loop: asyncio.AbstractEventLoop, host: str) -> Http1Connection:
        _, conn = await loop.create_connection(
            lambda: Http1Connection(loop, self._lost), host, self._port,
            ssl=self._ssl, server_hostname=self._server_hostname,
        )
        return conn

    async def _open_to_first(self, loop: asyncio.AbstractEventLoop, addresses: Sequence[str]) -> Http1Connection:
        """The first of ``addresses`` that accepts; a certificate that does not verify ends it there
        (another address of the same name would present the same claim)."""
        error: OSError = OSError("no address to connect to")
        for address in addresses:
            try:
                return await self._open_to(loop, address)
            except ssl.SSLCertVerificationError:
                raise
            except OSError as exc:
                error = exc
        raise error

    async def _wait_for_slot(self, loop: asyncio.AbstractEventLoop, limit_s: float) -> None:
        if limit_s <= 0:
            raise UpstreamTimeout("upstream_pool_timeout")
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(limit_s):
                await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # woken just as it timed out: pass the free slot on
            raise UpstreamTimeout("upstream_pool_timeout") from None
        finally:
            if not waiter.done():
                waiter.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _lost(self, conn: Http1Connection) -> None:
        """Called by a connection when its transport closes, in whatever state it was."""
        if conn in self._idle:
            self._idle.remove(conn)
            self._forget(conn)

    def _forget(self, conn: Http1Connection) -> None:
        if not conn.forgotten:
            conn.forgotten = True
            self._give_back_slot()

    def _give_back_slot(self) -> None:
        self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
