"""Reading proxy requests off a stream: llhttp (httptools, strict) with the front door's bounds.

Why llhttp and the server's pieces rather than h11 or a hand-written parser: the proxy door must
refuse exactly what the front door refuses (bare LF, obs-fold, a space before the colon, CL with
TE, ``Transfer-Encoding`` other than exactly ``chunked``, duplicated or malformed
``Content-Length``), and one parser plus ``server.framing`` is one set of rules; h11 reads bare LF
as a line end. The bounds are ``server.limits.ServerLimits`` (head size, target length, header
count, body size; first-byte, head, body and keep-alive timeouts), applied as bytes arrive.

Why a stream reader and not the server's ``HttpConnection``: after a ``CONNECT`` the same socket
stops being HTTP and becomes a tunnel (or a TLS session the gateway terminates), which needs the
socket as a stream; the server's protocol owns its transport for HTTP only, and its app interface
(ASGI) has no way to hand a connection over.

``RequestReader.next`` returns one whole request (head and bounded body) at a time, in order,
including pipelined ones; for a ``CONNECT`` it also returns the bytes the client sent after the
head (they belong to the tunnel). Refusals are raised as ``ReadRefused`` with the code and audit
reason; the caller renders them. What it refuses to do: read past a refusal, buffer more than one
read (64 KiB) beyond the request it is working on, or wait without a deadline.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

import httptools

from portcullis.errors import ErrorCode
from portcullis.server.base import Headers
from portcullis.server.framing import Expectation, expectation
from portcullis.server.limits import ServerLimits
from portcullis.server.request_head import RequestHeadCounts

__all__ = ["ProxyRequest", "ReadRefused", "RequestReader"]

_READ = 64 * 1024
_IDLE, _HEAD, _BODY = 0, 1, 2


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    """One request as read: names lower-case, the body whole (bounded), framing already checked."""

    method: str
    target: bytes
    version: str
    headers: Headers
    body: bytes
    keep_alive: bool
    upgrade: bool = False  # CONNECT, or an Upgrade request: no HTTP follows it on this connection
    rest: bytes = field(default=b"", repr=False)  # CONNECT: bytes the client sent after the head


class ReadRefused(Exception):
    """The request is refused before it is complete. ``answered``: a problem document is still due
    (``False`` for a connection that timed out before sending anything)."""

    def __init__(self, code: ErrorCode, reason: str, kind: str = "invalid_request", *, answered: bool = True,
                 method: str = "", target: bytes = b"", headers: Headers | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.kind = kind
        self.answered = answered
        self.method = method
        self.target = target
        self.headers = headers or []


class _Stop(Exception):
    """Raised in a parser callback to stop parsing; the refusal is in ``RequestReader._refusal``."""


class RequestReader(RequestHeadCounts):
    """Whole requests from ``stream``, one at a time, within ``limits``."""

    _limits: ServerLimits

    def __init__(self, stream: asyncio.StreamReader, limits: ServerLimits, *,
                 on_continue: Callable[[], None] | None = None, max_body_bytes: int | None = None,
                 first: bytes = b"") -> None:
        """``first``: bytes already read from ``stream`` that come before anything still in it."""
        self._stream = stream
        self._limits = limits
        self._max_body = max_body_bytes or limits.max_body_bytes
        self._on_continue = on_continue
        self._parser = httptools.HttpRequestParser(self)
        self._loop = asyncio.get_running_loop()
        self._ready: deque[ProxyRequest] = deque()
        self._state = _IDLE
        self._served = 0
        self._upgraded = False
        self._refusal: ReadRefused | None = None
        self._head_bytes = 0
        self._first = first
        self._begin()

    def _begin(self) -> None:
        self._start_head()
        self._method = ""
        self._version = ""
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_started = 0.0
        self._body_started = 0.0

    async def next(self) -> ProxyRequest | None:
        """The next request; ``None`` when the client closed (or idled out) between requests."""
        while not self._ready:
            if self._upgraded:
                return None
            data = await self._read()
            if data is None:
                return None
            self._feed(data)
        request = self._ready.popleft()
        self._served += 1
        return request

    async def _read(self) -> bytes | None:
        if self._first:
            data, self._first = self._first, b""
            if self._state == _IDLE and not self._served:
                self._head_started = self._loop.time()
            return data
        deadline, waiting = self._deadline()
        try:
            async with asyncio.timeout_at(deadline):
                data = await self._stream.read(_READ)
        except TimeoutError:
            if waiting == "idle":
                return None
            if waiting == "first_byte":
                raise ReadRefused(ErrorCode.REQUEST_TIMEOUT, "first_byte_timeout", "server_timeout",
                                  answered=False) from None
            raise self._refused(ErrorCode.REQUEST_TIMEOUT, f"{waiting}_timeout", "server_timeout") from None
        except ConnectionError:
            return None
        if not data:
            if self._state == _IDLE:
                return None
            raise self._refused(ErrorCode.REQUEST_MALFORMED, "incomplete_request", answered=False)
        return data

    def _deadline(self) -> tuple[float, str]:
        limits = self._limits
        if self._state == _HEAD:
            return self._head_started + limits.head_timeout, "head"
        if self._state == _BODY:
            return self._body_started + limits.body_timeout + self._body_size / limits.body_min_rate, "body"
        if self._served:
            return self._loop.time() + limits.keepalive_timeout, "idle"
        return self._loop.time() + limits.first_byte_timeout, "first_byte"

    def _feed(self, data: bytes) -> None:
        if self._state != _BODY:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded = True
            offset = int(exc.args[0]) if exc.args else len(data)
            if self._ready:
                last = self._ready.pop()
                self._ready.append(ProxyRequest(last.method, last.target, last.version, last.headers, last.body,
                                                False, True, data[offset:]))
            return
        except _Stop:
            raise self._take_refusal() from None
        except httptools.HttpParserError as exc:
            if self._refusal is not None:
                raise self._take_refusal() from None
            if isinstance(exc, httptools.HttpParserInvalidURLError):
                raise self._refused(ErrorCode.REQUEST_TARGET_INVALID, "invalid_target") from None
            if isinstance(exc, httptools.HttpParserInvalidMethodError):
                raise self._refused(ErrorCode.REQUEST_MALFORMED, "invalid_method") from None
            reason = "bad_body_framing" if self._state == _BODY else "bad_head"
            raise self._refused(ErrorCode.REQUEST_MALFORMED, reason) from None
        if self._state == _HEAD:
            overflow = self._overflow(self._head_bytes)
            if overflow is not None:
                raise self._refused(*overflow)

    def _refused(self, code: ErrorCode, reason: str, kind: str = "invalid_request", *,
                 answered: bool = True) -> ReadRefused:
        return ReadRefused(code, reason, kind, answered=answered, method=self._method, target=self._url[:1024],
                           headers=self._headers)

    def _take_refusal(self) -> ReadRefused:
        refusal, self._refusal = self._refusal, None
        assert refusal is not None
        return refusal

    def _stop(self, code: ErrorCode, reason: str) -> NoReturn:
        self._refusal = self._refused(code, reason)
        raise _Stop(reason)

    # -- llhttp callbacks ------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._begin()
        self._state = _HEAD
        self._head_started = self._loop.time()

    def on_headers_complete(self) -> None:
        parser = self._parser
        self._version = parser.get_http_version()
        self._method = parser.get_method().decode("ascii", "replace")
        reason = self._framing_error(self._version)
        if reason == "missing_host" and self._method == "CONNECT":
            reason = None  # RFC 9110 section 9.3.6: the authority is the target; Host is optional in practice
        if reason is not None:
            self._stop(ErrorCode.REQUEST_MALFORMED, reason)
        if self._method == "CONNECT" and (self._te_count or (self._cl_count and int(self._cl) > 0)):
            self._stop(ErrorCode.REQUEST_MALFORMED, "connect_with_body")  # RFC 9110 section 9.3.6
        if self._cl_count and int(self._cl) > self._max_body:
            self._stop(ErrorCode.REQUEST_TOO_LARGE, "body_too_large")
        if self._expects is not None:
            expect = expectation(b",".join(self._expects))
            if expect is Expectation.UNSUPPORTED:
                self._stop(ErrorCode.REQUEST_EXPECTATION_FAILED, "expectation_unsupported")
            if expect is Expectation.CONTINUE and self._version == "1.1" and self._has_body() and self._on_continue:
                self._on_continue()
            self._drop_expect()
        self._state = _BODY
        self._body_started = self._loop.time()

    def on_body(self, data: bytes) -> None:
        self._body_size += len(data)
        if self._body_size > self._max_body:
            self._stop(ErrorCode.REQUEST_TOO_LARGE, "body_too_large")
        self._body.append(data)

    def on_message_complete(self) -> None:
        keep_alive = bool(self._parser.should_keep_alive())
        self._ready.append(ProxyRequest(self._method, self._url, self._version, self._headers,
                                        b"".join(self._body), keep_alive))
        self._state = _IDLE
        self._head_bytes = 0
