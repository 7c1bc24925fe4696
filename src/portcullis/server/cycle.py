"""``RequestCycle``: one request's ASGI ``receive`` and ``send``, and its response framing.

Why apart from the connection: the connection owns bytes, time and parsing; the cycle owns the
ASGI contract for one request (the app's call and whether it completed its response, a body
already read and checked, a response head and body, the ``abort`` extension) and how that
response is framed on the wire (RFC 9112 section 6: ``content-length`` when the app gave the whole
body, chunked when it streams on HTTP/1.1, close delimited on HTTP/1.0; no body for HEAD, 1xx, 204
and 304).

Flow control: ``send`` returns only once the transport's write buffer is below its high-water
mark, so an app streaming an upstream answer to a client that does not read waits instead of
buffering; the connection's write timeout then cuts the client, ``send`` returns, and the app
releases its upstream connection. After a disconnect ``send`` is a no-op, as in uvicorn.

What it refuses to do: send a second response head, or frame a body twice (a ``transfer-encoding``
header from the app is dropped; the server frames).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from portcullis.server.base import ASGIApp, Message, Scope
from portcullis.server.body import RequestBody
from portcullis.server.response import CHUNK_END, date_line, encode_head

if TYPE_CHECKING:
    from portcullis.server.connection import HttpConnection

__all__ = ["RequestCycle"]

log = logging.getLogger("portcullis.server")

_CLOSE = b"connection: close\r\n"
_KEEP_ALIVE = b"connection: keep-alive\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n"
_REQUEST_DONE: Message = {"type": "http.request", "body": b"", "more_body": False}
_DISCONNECT: Message = {"type": "http.disconnect"}


class RequestCycle:
    """The ``receive``/``send`` pair handed to the app for one request."""

    __slots__ = (
        "_body", "_body_done", "_chunked", "_conn", "_head_only", "_head_sent", "_headers", "_http11",
        "_no_body", "_started", "_waiter", "complete", "disconnected", "keep_alive", "scope", "status",
    )

    def __init__(
        self, conn: HttpConnection, scope: Scope, body: RequestBody | None, *, keep_alive: bool, http11: bool,
    ) -> None:
        self._conn = conn
        self.scope = scope
        self._body = body
        self._body_done = False
        self.keep_alive = keep_alive
        self._http11 = http11
        self._head_only = scope["method"] == "HEAD"
        self._started = False
        self._head_sent = False
        self._chunked = False
        self._no_body = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._waiter: asyncio.Future[None] | None = None
        self.status = 0
        self.complete = False
        self.disconnected = False

    @property
    def head_sent(self) -> bool:
        return self._head_sent

    async def run(self, app: ASGIApp) -> None:
        """Call ``app`` once the body is in place; a failure or an unfinished response goes to the connection."""
        try:
            await self.finish_body()
            await app(self.scope, self.receive, self.send)
        except Exception:
            log.exception("the app failed on a request")
            self._conn.app_failed(self)
        else:
            if not self.complete and not self.disconnected:
                log.error("the app returned without completing its response")
                self._conn.app_failed(self)
        finally:
            self.close_body()

    async def finish_body(self) -> None:
        """Wait until the request body is wholly in place (a spill file may still be written)."""
        if self._body is not None:
            await self._body.finish()

    def close_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            body.close()

    async def receive(self) -> Message:
        if not self._body_done:
            body = self._body
            if body is None:
                self._body_done = True
                return _REQUEST_DONE
            data, more = await body.next_chunk()
            self._body_done = not more
            return {"type": "http.request", "body": data, "more_body": more}
        if not (self.disconnected or self.complete):
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return _DISCONNECT

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self._started:
                raise RuntimeError("the response has already started")
            self._started = True
            self.status = message["status"]
            self._headers = list(message.get("headers", ()))
            return
        if kind != "http.response.body" or not self._started:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if self.complete or self.disconnected:
            return
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        conn = self._conn
        if not self._head_sent:
            self._head_sent = True
            head = self._encode_head(body, more)
            conn.write(head + self._frame(body) if body else head)
        elif body:
            conn.write(self._frame(body))
        if not more:
            if self._chunked:
                conn.write(CHUNK_END)
            self.complete = True
            self._wake()
            conn.response_complete(self)
        elif conn.writing_paused:
            await conn.drain()

    def _frame(self, body: bytes) -> bytes:
        if self._no_body:
            return b""
        if self._chunked:
            return b"%x\r\n%s\r\n" % (len(body), body)
        return body

    def _encode_head(self, body: bytes, more: bool) -> bytes:
        status = self.status
        headers = self._headers
        has_length = has_date = False
        for name, value in headers:
            if name == b"content-length":
                has_length = True
            elif name == b"date":
                has_date = True
            elif name == b"connection" and b"close" in value.lower():
                self.keep_alive = False
            elif name == b"transfer-encoding":
                headers = [(n, v) for n, v in headers if n != b"transfer-encoding"]
        self._no_body = self._head_only or status < 200 or status in (204, 304)
        extra = b"" if has_date else date_line()
        if not has_length and not self._no_body:
            if not more:
                extra += b"content-length: %d\r\n" % len(body)
            elif self._http11:
                self._chunked = True
                extra += _CHUNKED
            else:
                self.keep_alive = False  # HTTP/1.0 without a length: the close ends the body
        if self._conn.draining:
            self.keep_alive = False
        if not self.keep_alive:
            extra += _CLOSE
        elif not self._http11:
            extra += _KEEP_ALIVE
        return encode_head(status, headers, extra)

    def abort(self) -> None:
        """The ``abort`` extension: end the connection where the response stands."""
        if not self.complete:
            self.disconnected = True
            self._wake()
            self._conn.abort()

    def lost(self) -> None:
        """The client is gone: nothing more is sent, a pending ``receive`` returns disconnect."""
        self.disconnected = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
