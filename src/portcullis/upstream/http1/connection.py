"""One keep-alive HTTP/1.1 connection to a backend: an ``asyncio.Protocol`` feeding llhttp.

Why not a stream reader/writer pair: the protocol callbacks let the parser run directly on each
received buffer, with no extra task or copy per request, which is most of what makes this client
cheaper than aiohttp on the ingress path (see ``bench/README.md``).

The connection runs one exchange at a time (no pipelining) and knows where it is in it:

    IDLE --begin()--> AWAIT_HEAD --head--> BODY --complete--> DONE --release--> IDLE

Bytes that arrive while no response is expected (IDLE or DONE), a second response after a
complete one, or a body after the answer to HEAD mean the two ends no longer agree on framing
(response smuggling, or a broken backend). The connection is then closed, never reused.

Back-pressure both ways: reading pauses while more than ``HIGH_WATER`` bytes of body wait for the
consumer, and a writer waits in ``drain`` while the transport's buffer is full.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable
from typing import cast

import httptools

from portcullis.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable
from portcullis.upstream.http1.framing import MAX_RESPONSE_HEAD_BYTES, BodyKind, Framing, response_framing

__all__ = ["HIGH_WATER", "LOW_WATER", "ConnectionDropped", "Http1Connection"]

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class ConnectionDropped(UpstreamUnavailable):
    """The backend closed the connection before sending a byte of the response.

    On a reused connection this is the keep-alive race (the backend timed the idle connection out
    as we wrote to it); the client may then retry an idempotent request once on a new connection.
    """


class _State(enum.Enum):
    IDLE = 0
    AWAIT_HEAD = 1
    BODY = 2
    DONE = 3


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout("upstream_timeout"))


class Http1Connection(asyncio.Protocol):
    """The protocol object for one TCP (or TLS) connection; the pool owns its lifetime."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_lost: Callable[[Http1Connection], None]) -> None:
        self._loop = loop
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._fresh_parser_needed = False
        self._state = _State.IDLE
        self._method = ""
        self._interim = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._content_lengths: list[bytes] = []
        self._transfer_encodings: list[bytes] = []
        self._connection: list[bytes] = []
        self.status = 0
        self.framing: Framing | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._reading_paused = False
        self._error: UpstreamError | None = None
        self._received = False
        self._waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.lost = False
        self.desynced = False
        self.exchanges = 0
        self.idle_since = 0.0
        self.forgotten = False  # set once by the pool when it stops counting this connection

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        if self._state is _State.IDLE or self._state is _State.DONE:
            self._desync()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamProtocolError("response_upgrade"))
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            self._fail(cause if isinstance(cause, UpstreamError) else UpstreamProtocolError("response_malformed"))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost decides what the EOF meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._state is _State.BODY and self.framing is not None and self.framing.kind is BodyKind.UNTIL_CLOSE:
            if exc is None:
                self._state = _State.DONE
                self._wake()
            else:
                self._fail(UpstreamUnavailable("upstream_reset"))
        elif self._state is _State.AWAIT_HEAD:
            self._fail(ConnectionDropped("upstream_closed") if not self._received
                       else UpstreamProtocolError("response_truncated"))
        elif self._state is _State.BODY:
            self._fail(UpstreamProtocolError("response_truncated"))
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)
        self._on_lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)

    # --- llhttp callbacks (httptools) ------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._state is not _State.AWAIT_HEAD:
            raise UpstreamProtocolError("unexpected_response")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_RESPONSE_HEAD_BYTES:
            raise UpstreamProtocolError("response_head_too_large")
        name = name.lower()
        if name == b"content-length":
            self._content_lengths.append(value)
        elif name == b"transfer-encoding":
            self._transfer_encodings.append(value)
        elif name == b"connection":
            self._connection.append(value)
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status < 200:
            if status == 101:  # we never ask to upgrade (Upgrade is hop-by-hop and stripped)
                raise UpstreamProtocolError("response_upgrade")
            self._interim = True  # 100 Continue, 103 Early Hints: skipped, never forwarded
            return
        self.framing = response_framing(
            status=status, version=parser.get_http_version(), method=self._method,
            content_lengths=self._content_lengths, transfer_encodings=self._transfer_encodings,
            connection=self._connection,
        )
        self.status = status
        if self.framing.kind is BodyKind.NONE:
            self._state = _State.DONE
            if self._method == "HEAD":
                # llhttp cannot be told the answer to HEAD has no body; it would read the next
                # response as this one's body. The next exchange starts on a new parser.
                self._fresh_parser_needed = True
        else:
            self._state = _State.BODY
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._state is not _State.BODY:
            raise UpstreamProtocolError("unexpected_body")
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self._headers = []
            self._head_bytes = 0
            self._content_lengths, self._transfer_encodings, self._connection = [], [], []
            return
        if self._state is _State.BODY:
            self._state = _State.DONE
            self._wake()

    # --- the exchange, driven by the client ------------------------------------------------

    def begin(self, method: str) -> None:
        """Start an exchange on an idle connection."""
        if self._fresh_parser_needed:
            self._parser = httptools.HttpResponseParser(self)
            self._fresh_parser_needed = False
        self._state = _State.AWAIT_HEAD
        self._method = method
        self._headers = []
        self._head_bytes = 0
        self._content_lengths, self._transfer_encodings, self._connection = [], [], []
        self.status = 0
        self.framing = None
        self._error = None
        self._received = False

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self.lost:
            self._transport.write(data)

    @property
    def write_paused(self) -> bool:
        return self._write_paused and not self.lost

    async def drain(self, limit_s: float) -> None:
        """Wait until the transport accepts more data (or the connection is gone)."""
        if not self.write_paused:
            return
        waiter = self._drain_waiter = self._loop.create_future()
        handle = self._loop.call_later(max(limit_s, 0.0), _time_out, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._drain_waiter = None

    async def wait_head(self, limit_s: Callable[[], float]) -> None:
        """Wait for the response head; raise the exchange's error if it failed."""
        while self._state is _State.AWAIT_HEAD and self._error is None:
            await self._wait(limit_s())
        if self._error is not None:
            raise self._error

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return self._headers

    def take_body(self) -> bytes | None:
        """Everything buffered so far (``b""`` when nothing is), or ``None`` once the body has ended."""
        chunks = self._chunks
        if chunks:
            data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            self._buffered = 0
            if self._reading_paused and self._transport is not None and not self.lost:
                self._reading_paused = False
                self._transport.resume_reading()
            return data
        if self._error is not None:
            raise self._error
        if self._state is _State.DONE:
            return None
        return b""

    def take_complete_body(self) -> bytes | None:
        """The whole body when the response has already ended cleanly, else ``None`` (nothing taken)."""
        if self._state is not _State.DONE or self._error is not None:
            return None
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        return data

    async def wait_body(self, limit_s: float) -> None:
        """Wait until ``take_body`` has something new to say."""
        if self._chunks or self._error is not None or self._state is _State.DONE:
            return
        await self._wait(limit_s)

    @property
    def reusable(self) -> bool:
        return (
            self._state is _State.DONE and not self.lost and not self.desynced and self._error is None
            and not self._chunks and self.framing is not None and self.framing.keep_alive
        )

    def mark_idle(self, now: float) -> None:
        self._state = _State.IDLE
        self.exchanges += 1
        self.idle_since = now

    def abort(self) -> None:
        """Drop the connection at once (mid-exchange or unusable): nothing more is read or sent."""
        self.desynced = True
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # --- internals -------------------------------------------------------------------------

    async def _wait(self, limit_s: float) -> None:
        if limit_s <= 0:
            raise UpstreamTimeout("upstream_timeout")
        waiter = self._waiter = self._loop.create_future()
        handle = self._loop.call_later(limit_s, _time_out, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self._state is _State.AWAIT_HEAD or self._state is _State.BODY:
            if self._error is None:
                self._error = error
            self._wake()
        self._desync()

    def _desync(self) -> None:
        self.desynced = True
        if self._transport is not None:
            self._transport.close()
