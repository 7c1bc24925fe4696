"""``Http1Upstream``: the ingress ``Upstream`` on our own HTTP/1.1 client (asyncio + httptools).

Why our own client: on a pass-through, aiohttp spent about 110 us of the 140 us a request cost,
and no maintained library offered a keep-alive pool this lean with the control a gateway needs over
framing (see ``bench/README.md`` for the measurements). The egress door sends through it
too (``egress/call/phase5_client.py``), with an address hook that pins each new connection to the
addresses the SSRF guard checked.

What one ``send`` does:
- writes the request head and body (a ``bytes`` body in the same write; a streamed body with its
  ``Content-Length``, or chunked when the length is unknown, waiting on the transport when full);
- waits for the response head (1xx skipped), bounded by the read timeout and the total deadline;
- returns a response whose body streams with the same bounds, and whose ``aclose`` puts the
  connection back only when the exchange ended cleanly.

Retries: only when a reused keep-alive connection turns out to be closed before a byte of the
response arrived, only for idempotent methods (RFC 9110 section 9.2.2) whose body can be sent
again, and only once, on a new connection. Anything else is reported, never replayed.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

from portcullis.upstream.base import Timeouts, UpstreamRequest
from portcullis.upstream.http1.connection import ConnectionDropped, Http1Connection
from portcullis.upstream.http1.framing import LAST_CHUNK, encode_chunk, encode_request_head
from portcullis.upstream.http1.pool import AddressHook, ConnectionPool

__all__ = ["Http1Response", "Http1Upstream"]

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_BODYLESS_BY_DEFAULT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "DELETE", "CONNECT"})
DEFAULT_IDLE_TIMEOUT_S = 30.0


class Http1Response:
    """The answer to one ``send``: status and headers now, the body as it arrives."""

    __slots__ = ("_closed", "_conn", "_deadline", "_pool", "_read_s", "headers", "status")

    def __init__(self, conn: Http1Connection, pool: ConnectionPool, read_s: float, deadline: float) -> None:
        self._conn = conn
        self._pool = pool
        self._read_s = read_s
        self._deadline = deadline
        self._closed = False
        self.status = conn.status
        self.headers = conn.headers

    def complete_body(self) -> bytes | None:
        return self._conn.take_complete_body()

    async def iter_body(self) -> AsyncIterator[bytes]:
        conn = self._conn
        loop = asyncio.get_running_loop()
        while True:
            data = conn.take_body()
            if data is None:
                return
            if data:
                yield data
                continue
            await conn.wait_body(min(self._read_s, self._deadline - loop.time()))

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.release(self._conn)


class Http1Upstream:
    """One backend (``http://`` or ``https://`` base URL) with its own connection pool."""

    def __init__(
        self, base_url: str, *, pool_size: int, verify_tls: bool = True, ca_file: str | None = None,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S, client_cert: tuple[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None, addresses: AddressHook | None = None,
    ) -> None:
        """``ca_file`` replaces the system's CAs (``create_default_context`` loads the defaults only
        without one): a pinned CA. ``client_cert`` (certificate file, key file) is presented to an
        upstream that asks for one (mutual TLS). ``ssl_context``: a context made once and shared by
        many upstreams (loading the system's CAs is not free), instead of the three options above.
        ``addresses``: where each new connection goes (see ``ConnectionPool``); the URL's host is
        then the name TLS verifies and sends as SNI, never looked up here."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream URL must be http:// or https:// with a host: {base_url!r}")
        tls = parts.scheme == "https"
        if not tls:
            ssl_context = None
        elif ssl_context is None:
            ssl_context = ssl.create_default_context(cafile=ca_file)
            if not verify_tls:
                ssl_context.check_hostname = False
                ssl_context.verify_mode = ssl.CERT_NONE
            if client_cert is not None:
                ssl_context.load_cert_chain(*client_cert)
        self._prefix = parts.path.rstrip("/")
        self._pool = ConnectionPool(
            parts.hostname, parts.port or (443 if tls else 80), limit=pool_size, idle_timeout_s=idle_timeout_s,
            ssl_context=ssl_context, server_hostname=parts.hostname, addresses=addresses,
        )

    @property
    def pool(self) -> ConnectionPool:
        return self._pool

    async def send(self, request: UpstreamRequest, *, timeouts: Timeouts) -> Http1Response:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeouts.total_s
        method, body, headers = request.method, request.body, request.headers
        chunked = False
        if body is None:
            if method not in _BODYLESS_BY_DEFAULT:
                headers = [*headers, (b"content-length", b"0")]
        elif isinstance(body, bytes):
            if not _has_content_length(headers):
                headers = [*headers, (b"content-length", b"%d" % len(body))]
        elif not _has_content_length(headers):
            chunked = True
            headers = [*headers, (b"transfer-encoding", b"chunked")]
        head = encode_request_head(method, self._prefix + request.path_and_query, headers)
        replayable = method in _IDEMPOTENT and not isinstance(body, AsyncIterator)

        def remaining() -> float:
            return min(timeouts.read_s, deadline - loop.time())

        attempt = 0
        while True:
            conn = await self._pool.acquire(min(timeouts.connect_s, deadline - loop.time()))
            reused = conn.exchanges > 0
            try:
                conn.begin(method)
                if body is None:
                    conn.write(head)
                elif isinstance(body, bytes):
                    conn.write(head + body)
                else:
                    conn.write(head)
                    await _stream(conn, body, chunked, remaining)
                await conn.wait_head(remaining)
            except ConnectionDropped:
                self._pool.discard(conn)
                if reused and replayable and attempt == 0:
                    attempt += 1
                    continue
                raise
            except BaseException:
                self._pool.discard(conn)
                raise
            return Http1Response(conn, self._pool, timeouts.read_s, deadline)

    async def aclose(self) -> None:
        await self._pool.aclose()


async def _stream(
    conn: Http1Connection, body: AsyncIterator[bytes], chunked: bool, remaining: Callable[[], float],
) -> None:
    """Send a streamed body, pausing while the transport is full. Stops early if the backend has
    already answered and closed (the answer, a 413 say, is then what the client gets)."""
    async for chunk in body:
        if conn.lost:
            return
        if chunk:
            conn.write(encode_chunk(chunk) if chunked else chunk)
        if conn.write_paused:
            await conn.drain(remaining())
    if chunked:
        conn.write(LAST_CHUNK)


def _has_content_length(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name == b"content-length" for name, _ in headers)
