"""``HttpConnection``: one client connection, an ``asyncio.Protocol`` on llhttp (httptools, strict).

Why our own: uvicorn buffered an unterminated head without limit, had no timeout for a head, a
body or a client that does not read, answered parser errors in plain text, and dispatched a head
before its body's framing was known to be good. This module is the state machine that owns those
decisions (parse state, the request in flight, the pipelining queue, closing, one timer):

- sizes while reading: bytes of an unfinished head are counted in ``data_received`` (431, or 414
  while still in the target), header fields are counted (431), bodies are bounded by the route's
  limit (413) as they arrive;
- time: one loop timer per connection (``loop.call_at``), re-armed lazily; ``deadlines`` says
  which timeout applies in which state and when it runs out, this module acts on it;
- framing: llhttp's errors and ``framing``'s rules become refusals (400, or 417 for an ``Expect``
  other than ``100-continue``); the connection closes;
- order: a request is dispatched only once its body is read and checked (unless the app's
  ``BodyPlan`` streams it: then at its head, with the body following as a ``StreamedBody``);
  reading pauses while a response is in flight, and pipelined requests are answered in order.

The pure parts live beside it: ``scope`` (what the app is told), ``deadlines`` (the timeout
table), ``framing`` (head rules), ``body`` (buffering), ``cycle`` (one request's ASGI calls),
``refusal`` and ``response`` (bytes on the wire).

What it refuses to do: let a refusal reach the client in any form but a problem document, keep a
connection whose framing failed, or hand the app a request it has not read to the end unless the
app asked for the body streamed.

Why over 400 lines: what is left is the state machine itself, and every transition touches the
timer; split further it could no longer be read in one place.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import NoReturn, cast

import httptools

from portcullis.errors import ClientError, ErrorCode
from portcullis.server.base import ABORT_KEY, BodyPlan, Refusal
from portcullis.server.body import RequestBody
from portcullis.server.cycle import RequestCycle
from portcullis.server.deadlines import BODY, HEAD, IN_FLIGHT, KEEPALIVE, LINGER, WRITE, expires_at, waiting_for
from portcullis.server.deadlines import PARSE_BODY as _BODY
from portcullis.server.deadlines import PARSE_HEAD as _HEAD
from portcullis.server.deadlines import PARSE_IDLE as _NONE
from portcullis.server.framing import Expectation, expectation
from portcullis.server.limits import ServerLimits
from portcullis.server.refusal import new_refusal, render_refusal, report
from portcullis.server.request_head import RequestHeadCounts
from portcullis.server.response import CONTINUE
from portcullis.server.scope import build_scope, socket_address
from portcullis.server.state import ServerState
from portcullis.server.stream import StreamedBody
from portcullis.server.tls import TlsPeer

__all__ = ["HttpConnection"]

log = logging.getLogger("portcullis.server")

_BUFFERED = BodyPlan()  # without a planner: read whole before dispatch, within the listener's limit


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; the refusal is in ``_refusal``."""


class HttpConnection(RequestHeadCounts, asyncio.Protocol):
    """One client connection: requests parsed as they come (``RequestHeadCounts`` counts each
    head against the limits), answered in order, every wait bounded."""

    _limits: ServerLimits
    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._limits = state.limits
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._client: tuple[str, int] | None = None
        self._server: tuple[str, int] | None = None
        self._peer = ""
        self._tls: TlsPeer | None = None  # over TLS: what the handshake established, read once
        self._admitted = False
        self._closing = False
        self._served = False
        self._timer: asyncio.TimerHandle | None = None
        self._since = 0.0  # start of the current wait (connection, request, idle, paused write, close)
        self._write_paused_at = 0.0
        self._writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._cut_reason = "gone"  # what connection_lost tells the cycle, unless the server cut it
        self._reading_paused = False
        self._queue: deque[RequestCycle | Refusal] = deque()
        self._cycle: RequestCycle | None = None
        self._refusal: Refusal | None = None
        self._input_done = False  # a refusal is owed: nothing more is parsed
        self._parsing = _NONE
        self._head_bytes = 0
        self._new_request()

    def _new_request(self) -> None:
        self._start_head()
        self._method = ""
        self._scope: dict[str, object] | None = None
        self._body: RequestBody | StreamedBody | None = None
        self._body_limit = 0
        self._body_since = 0.0

    # -- transport events -------------------------------------------------------------------
    def connection_made(self, base: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, only the same interface.
        self._transport = transport = cast(asyncio.Transport, base)
        self._client = client = socket_address(transport.get_extra_info("peername"))
        self._peer = client[0] if client is not None else ""
        self._server = socket_address(transport.get_extra_info("sockname"))
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self._tls = TlsPeer.from_ssl_object(ssl_object)
        transport.set_write_buffer_limits(high=self._limits.write_high_water)
        self._since = self._loop.time()
        refused = self._state.caps.admit(self._peer)
        if refused is not None:
            refusal = self._new_refusal(ErrorCode.SERVICE_UNAVAILABLE, refused, "connection_cap")
            transport.write(render_refusal(refusal, report(self._state.sink, refusal)))
            self._close()
            return
        self._admitted = True
        self._state.connections.add(self)
        self._state.all_closed.clear()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._admitted:
            self._admitted = False
            self._state.caps.release(self._peer)
            self._state.forget(self)
        if self._cycle is not None:
            self._cycle.lost(self._cut_reason)
        for item in self._queue:
            if isinstance(item, RequestCycle):
                item.lost()
                item.close_body()
        self._queue.clear()
        if self._parsing == _BODY and self._body is not None:
            self._body.close()
        self._wake_drain()

    def eof_received(self) -> bool:
        if self._parsing == _BODY and isinstance(self._body, StreamedBody):
            return False  # its body can never end now: as if the client were gone
        if self._cycle is not None or self._queue:
            if self._cycle is not None:
                self._cycle.keep_alive = False
            return True  # answer what was asked, then close
        return False

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._write_paused_at = self._loop.time()
        self._arm()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_drain()

    def data_received(self, data: bytes) -> None:
        if self._closing or self._input_done:
            return  # lingering after a refusal: input is dropped
        if self._parsing != _BODY:
            if self._parsing == _NONE and self._cycle is None and not self._queue:
                self._since = self._loop.time()
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An Upgrade (h2c, websocket) is not offered: the request is answered over HTTP/1.1
            # and the connection closed, as the bytes after it belong to another protocol.
            self._closing_after_queue()
        except httptools.HttpParserError as exc:
            self._refuse(self._refusal or self._parse_refusal(exc))
            return
        if self._parsing == _HEAD:
            overflow = self._overflow(self._head_bytes)
            if overflow is not None:
                self._refuse(self._request_refusal(*overflow))

    # -- parser callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._new_request()
        self._parsing = _HEAD
        if self._cycle is None and not self._queue:
            self._since = self._loop.time()
            # The head's deadline may be earlier than the first-byte or keep-alive one armed now.
            self._arm()

    def on_headers_complete(self) -> None:
        parser = self._parser
        version = parser.get_http_version()
        self._method = parser.get_method().decode("ascii", "replace")
        reason = self._framing_error(version)
        if reason is not None:
            self._stop(ErrorCode.REQUEST_MALFORMED, reason)
        wants_continue = False
        if self._expects is not None:
            expect = expectation(b",".join(self._expects))
            if expect is Expectation.UNSUPPORTED:
                self._stop(ErrorCode.REQUEST_EXPECTATION_FAILED, "expectation_unsupported")
            wants_continue = expect is Expectation.CONTINUE and version == "1.1"  # HTTP/1.0: ignored
            self._drop_expect()
        scope = build_scope(self._url, version, self._method, self._headers, self._server, self._client,
                            self._state.scheme, self._tls)
        self._scope = scope
        if not self._has_body():
            self._parsing = _NONE
            return
        plan = _BUFFERED
        planner = self._state.body_plan
        if planner is not None:
            try:
                plan = planner.body_plan(scope)
            except Exception:
                log.exception("body_plan failed; buffering within the listener's default limit")
        limit = plan.limit or self._limits.max_body_bytes
        if self._cl_count and int(self._cl) > limit:
            self._stop(ErrorCode.REQUEST_TOO_LARGE, "body_too_large")
        self._body_limit = limit
        if plan.stream:
            streamed = StreamedBody(self._limits.body_buffer_bytes, self._loop.time)
            streamed.on_wanted = self._body_wanted
            self._body = streamed
        else:
            body = self._body = RequestBody(self._limits.body_buffer_bytes)
            body.on_drained = self._body_drained
        self._parsing = _BODY
        self._body_since = self._loop.time()
        if wants_continue and self._transport is not None:
            self._transport.write(CONTINUE)  # RFC 9110 section 10.1.1: the body is wanted
        if plan.stream:
            self._dispatch(scope, streamed)  # the body follows as it arrives
        self._arm()  # the body's deadline can come before the one armed for the head

    def on_body(self, data: bytes) -> None:
        body = self._body
        assert body is not None
        if body.size + len(data) > self._body_limit:
            self._stop(ErrorCode.REQUEST_TOO_LARGE, "body_too_large")
        if body.append(data):
            self._pause_reading()

    def on_message_complete(self) -> None:
        self._parsing = _NONE
        self._head_bytes = 0
        scope = self._scope
        assert scope is not None
        body = self._body
        self._body = None
        if isinstance(body, StreamedBody):
            body.end()  # its request went to the app with its head
        else:
            self._dispatch(scope, body)
        self._pause_reading()  # the next request waits for this one's answer

    # -- dispatch -----------------------------------------------------------------------------
    def _dispatch(self, scope: dict[str, object], body: RequestBody | StreamedBody | None) -> None:
        """Queue the request for the app (with its whole body, or its streamed body as it comes)."""
        keep_alive = self._parser.should_keep_alive() and not self._state.draining
        cycle = RequestCycle(self, scope, body, keep_alive=keep_alive, http11=scope["http_version"] == "1.1")
        scope["extensions"][ABORT_KEY] = {"abort": cycle.abort}  # type: ignore[index]
        self._queue.append(cycle)
        if self._cycle is None:
            self._next()

    # -- dispatch -----------------------------------------------------------------------------
    def _next(self) -> None:
        """Start the next queued request, send a queued refusal, or go idle."""
        self._cycle = None
        if self._queue:
            item = self._queue.popleft()
            if isinstance(item, Refusal):
                self._send_refusal(item)
                return
            self._cycle = item
            self._loop.create_task(item.run(self._state.app))
            return
        if self._state.draining:
            self._close()
            return
        self._since = self._loop.time()
        self._resume_reading()
        self._arm()

    def app_failed(self, cycle: RequestCycle) -> None:
        """Called by the cycle when the app raised or returned without completing its response."""
        if cycle.complete or cycle.disconnected or self._closing:
            return
        if cycle.head_sent:
            self._close()  # RFC 9112 section 8: an incomplete message is shown by the close
            return
        self._cycle = None
        self._send_refusal(self._new_refusal(ErrorCode.INTERNAL, "app_failed", "internal_error",
                                             method=str(cycle.scope["method"])))

    def response_complete(self, cycle: RequestCycle) -> None:
        """Called by the cycle when the last byte of its response is written."""
        if cycle.body_unread and not self._closing:
            self._cycle = None
            self._linger()  # answered before its streamed body ended: the rest is never read
            return
        if not cycle.keep_alive or self._closing:
            self._close()
            return
        self._served = True
        self._next()

    # -- what the cycle uses ------------------------------------------------------------------
    @property
    def draining(self) -> bool:
        return self._state.draining

    @property
    def writing_paused(self) -> bool:
        return self._writing_paused and not self._closing

    def write(self, data: bytes) -> None:
        if not self._closing and self._transport is not None:
            self._transport.write(data)

    async def drain(self) -> None:
        """Wait until the client has read enough (or is gone); the write timeout bounds the wait.

        While it waits, the app keeps what the response holds (an upstream connection), so the
        waits are capped (``max_stalled_responses``): one wait too many cuts the connection that
        has waited longest. A client that never reads is always the longest waiting; one that
        reads slowly waits a moment and goes. So stalled clients can never hold every upstream
        connection, and normal traffic keeps the rest of the pool.
        """
        if not self.writing_paused:
            return
        stalled = self._state.stalled
        stalled[self] = None
        if len(stalled) > self._limits.max_stalled_responses:
            oldest = next(iter(stalled))
            log.info("a response waited longest on a client that does not read; connection cut to free it")
            oldest.cut("stalled")
        if self._closing:
            return
        self._drain_waiter = self._loop.create_future()
        try:
            await self._drain_waiter
        finally:
            stalled.pop(self, None)

    def cut(self, reason: str) -> None:
        """Cut the connection now, without flushing; its response's ``send`` raises with ``reason``."""
        self._state.stalled.pop(self, None)
        if self._transport is not None:
            self._cut_reason = reason
            self._transport.abort()

    def abort(self) -> None:
        self._close()

    def abort_now(self) -> None:
        """Cut the connection without flushing (the drain's time is up)."""
        if self._transport is not None:
            self._transport.abort()

    def shutdown(self) -> None:
        """Graceful drain: an idle connection closes now; a busy one after its response."""
        if self._cycle is None and not self._queue and self._parsing == _NONE:
            self._close()

    def _wake_drain(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- refusals -----------------------------------------------------------------------------
    def _new_refusal(self, code: ErrorCode, reason: str, kind: str, **fields: object) -> Refusal:
        return new_refusal(code, reason, kind, peer=self._peer or None, scheme=self._state.scheme,
                           duration_s=self._loop.time() - self._since, **fields)  # type: ignore[arg-type]

    def _request_refusal(self, code: ErrorCode, reason: str, kind: str = "invalid_request") -> Refusal:
        return self._new_refusal(code, reason, kind, method=self._method, target=self._url,
                                 headers=self._headers, bytes_in=self._body.size if self._body else 0)

    def _stop(self, code: ErrorCode, reason: str) -> NoReturn:
        self._refusal = self._request_refusal(code, reason)
        raise _Refused(reason)

    def _parse_refusal(self, exc: httptools.HttpParserError) -> Refusal:
        if isinstance(exc, httptools.HttpParserInvalidURLError):
            return self._request_refusal(ErrorCode.REQUEST_TARGET_INVALID, "invalid_target")
        if isinstance(exc, httptools.HttpParserInvalidMethodError):
            return self._request_refusal(ErrorCode.REQUEST_MALFORMED, "invalid_method")
        reason = "bad_body_framing" if self._parsing == _BODY else "bad_head"
        return self._request_refusal(ErrorCode.REQUEST_MALFORMED, reason)

    def _refuse(self, refusal: Refusal) -> None:
        """Refuse: after the responses already owed on this connection, in order (pipelining)."""
        if self._parsing == _BODY and isinstance(self._body, StreamedBody):
            # Its request is with the app already: the app answers the refusal (``receive`` raises
            # it) and records it; nothing more is read from this connection.
            self._body.fail(ClientError(refusal.reason, code=refusal.code))
            self._body = None
            self._parsing = _NONE
            self._refusal = None
            self._input_done = True
            self._pause_reading()
            return
        if self._parsing == _BODY and self._body is not None:
            self._body.close()
        self._parsing = _NONE
        self._refusal = None
        if self._cycle is not None or self._queue:
            self._queue.append(refusal)
            self._pause_reading()
            self._input_done = True
            return
        self._send_refusal(refusal)

    def _send_refusal(self, refusal: Refusal) -> None:
        extra = report(self._state.sink, refusal)
        transport = self._transport
        if transport is None or self._closing:
            return
        if refusal.answered:
            transport.write(render_refusal(refusal, extra, head_only=refusal.method == "HEAD"))
        self._linger()

    def _linger(self) -> None:
        """Close after what was written, reading and dropping input meanwhile (nginx's
        lingering_close): unread input would make the kernel answer with a reset that can destroy
        the answer before the client reads it."""
        transport = self._transport
        if transport is None or not transport.can_write_eof():
            self._close()
            return
        transport.write_eof()
        self._closing = True
        self._since = self._loop.time()
        self._resume_reading()
        self._arm()

    def _closing_after_queue(self) -> None:
        for item in self._queue:
            if isinstance(item, RequestCycle):
                item.keep_alive = False
        if self._cycle is not None:
            self._cycle.keep_alive = False

    def _close(self) -> None:
        if self._transport is None:
            return
        if not self._closing:
            self._closing = True
            self._since = self._loop.time()
        self._transport.close()
        self._arm()  # a client that never reads cannot keep a closing connection forever

    # -- reading ------------------------------------------------------------------------------
    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()

    def _body_drained(self) -> None:
        if self._parsing == _BODY and self._cycle is None and not self._queue:
            self._resume_reading()

    def _body_wanted(self) -> None:
        """The app took a streamed body's bytes (or waits for more): read on."""
        if self._parsing == _BODY and not self._closing and not self._input_done:
            self._resume_reading()
            self._arm()

    # -- time ---------------------------------------------------------------------------------
    def _wait(self) -> tuple[int, float | None]:
        """What the connection waits for now, and when that runs out (``deadlines``' table).

        A streamed body is read while its request is with the app, so it is timed as a body; the
        time its reading was paused for the app (backpressure) is not held against the client.
        """
        body = self._body
        streamed = isinstance(body, StreamedBody)
        busy = (self._cycle is not None or bool(self._queue)) and not (streamed and self._parsing == _BODY)
        wait = waiting_for(self._closing, self._writing_paused, busy, self._parsing, self._served)
        waited = body.paused_s if isinstance(body, StreamedBody) else 0.0
        deadline = expires_at(wait, self._limits, self._since, self._write_paused_at, self._body_since + waited,
                              body.size if body is not None else 0)
        return wait, deadline

    def _arm(self) -> None:
        _, deadline = self._wait()
        if deadline is None:
            return  # the app's own timeouts bound a request in flight
        timer = self._timer
        if timer is not None:
            if timer.when() <= deadline:
                return  # it fires first, then re-arms for the later deadline
            timer.cancel()
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        wait, deadline = self._wait()
        transport = self._transport
        if wait == IN_FLIGHT or transport is None:
            return
        if deadline is not None and self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._on_timer)
        elif wait == LINGER:
            transport.abort()
        elif wait == WRITE:
            log.info("client did not read its response within the write timeout; connection cut")
            self.cut("write_timeout")
        elif wait == HEAD:
            self._refuse(self._request_refusal(ErrorCode.REQUEST_TIMEOUT, "head_timeout", "server_timeout"))
        elif wait == BODY:
            self._refuse(self._request_refusal(ErrorCode.REQUEST_TIMEOUT, "body_timeout", "server_timeout"))
        elif wait == KEEPALIVE:
            self._close()  # keep-alive idle: an ordinary end
        else:
            self._refuse(self._new_refusal(ErrorCode.REQUEST_TIMEOUT, "first_byte_timeout", "server_timeout",
                                           answered=False))
