"""One client connection's exchanges on the proxy door: write within a deadline, refuse, forward.

Why apart from the connection loop (``door``) and the tunnels (``tunnel``): a request read on the
proxy connection and a request read inside a tunnel the door terminates are answered the same
way, so both use one ``Exchange``: every write waits at most ``write_timeout`` for a client that
does not read (then the connection is cut), every refusal is recorded through the backend and
answered as a problem document with the request id, and every forwarded answer is relayed with
the door's own framing.

What it refuses to do: let a backend fault go unanswered (``asked``: a 500 problem document and a
traceback in the log), or pass on hop-by-hop, ``Proxy-*``, ``Host`` or the context headers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from portcullis.egress.proxy.answer import (
    Problem,
    chunk,
    problem_for,
    render,
    render_problem_bytes,
    render_stream_head,
)
from portcullis.egress.proxy.auth import parse_proxy_authorization
from portcullis.egress.proxy.base import ForwardRequest, ProxyBackend, ProxyIdentity, TunnelRefused
from portcullis.egress.proxy.reader import ProxyRequest, ReadRefused
from portcullis.egress.proxy.splice import SpliceLimits
from portcullis.errors import CircuitOpen, ClientError, ErrorCode, Forbidden, UpstreamError
from portcullis.http.headers import HOP_BY_HOP, connection_tokens
from portcullis.pipeline.handler import BodyStream
from portcullis.server.base import Headers
from portcullis.server.limits import ServerLimits
from portcullis.server.refusal import new_refusal
from portcullis.server.response import CHUNK_END

__all__ = ["Ended", "Exchange", "ProxyDoorSettings", "Sent", "asked", "crossing", "kind_of"]

log = logging.getLogger("portcullis.egress.proxy")

# Never sent on: hop-by-hop fields (Proxy-Authorization among them), the context headers the door
# read, and Host (the pipeline sets it from the route's URL).
_DROPPED = HOP_BY_HOP | {b"host", b"x-workflow-id", b"x-execution-id"}
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ProxyDoorSettings:
    """The listener's bounds: the front door's ``ServerLimits``, the tunnels', and the body limit."""

    limits: ServerLimits
    splice: SpliceLimits
    max_body_bytes: int


@dataclass(frozen=True, slots=True)
class Sent:
    """How an answer went: whether the connection stays open, and the bytes written."""

    keep_alive: bool
    bytes_down: int


class Ended(Exception):
    """The connection is done: the client is gone, or did not read within the write timeout."""


class Exchange:
    """Answers on one client connection (``writer``, from ``peer``)."""

    def __init__(self, backend: ProxyBackend, settings: ProxyDoorSettings, writer: asyncio.StreamWriter,
                 peer: str) -> None:
        self.backend = backend
        self.settings = settings
        self.writer = writer
        self.peer = peer

    async def write(self, data: bytes) -> None:
        writer = self.writer
        if writer.is_closing():
            raise Ended()
        writer.write(data)
        try:
            async with asyncio.timeout(self.settings.limits.write_timeout):
                await writer.drain()
        except (TimeoutError, ConnectionError):
            writer.transport.abort()
            raise Ended() from None

    async def close(self) -> None:
        """Close after what was written; a client that does not read the rest is cut at the write timeout."""
        writer = self.writer
        if not writer.is_closing():
            writer.close()
        try:
            async with asyncio.timeout(self.settings.limits.write_timeout):
                await writer.wait_closed()
        except TimeoutError:
            writer.transport.abort()
        except Exception:  # noqa: S110 - reset by the peer while closing: nothing is left to do
            pass

    async def refuse_read(self, refused: ReadRefused) -> None:
        """A request the reader refused (framing, size, time): recorded, answered if still due."""
        refusal = new_refusal(refused.code, refused.reason, refused.kind, peer=self.peer, scheme="http",
                              duration_s=0.0, answered=refused.answered, method=refused.method,
                              target=refused.target, headers=refused.headers)
        extra = self.backend.refused(refusal)
        if refused.answered:
            await self.write(render_problem_bytes(Problem(refused.code, tuple(extra)), refusal.request_id,
                                                  head_only=refused.method == "HEAD"))

    async def refuse(self, request: ProxyRequest, request_id: str, exc: ClientError | UpstreamError, *, kind: str,
                     proxy_auth: bool = False, keep_alive: bool = False) -> None:
        """Record a refusal the door made (or the backend raised), then answer it."""
        problem = problem_for(exc, proxy_auth=proxy_auth)
        refusal = replace(new_refusal(problem.code, exc.reason, kind, peer=self.peer, scheme="http", duration_s=0.0,
                                      method=request.method, target=request.target, headers=request.headers),
                          request_id=request_id)
        extra = self.backend.refused(refusal)
        problem = replace(problem, headers=problem.headers + tuple(extra))
        await self.write(render_problem_bytes(problem, request_id, keep_alive=keep_alive,
                                              head_only=request.method == "HEAD"))

    async def identity(self, request: ProxyRequest, request_id: str) -> ProxyIdentity:
        """``Proxy-Authorization``, parsed here and verified by the backend (``Unauthenticated`` otherwise)."""
        credentials = parse_proxy_authorization(request.headers)
        return await asked(self.backend.authenticate(credentials, client_ip=self.peer, request_id=request_id))

    async def forward(self, call: ForwardRequest, request: ProxyRequest, keep_alive: bool) -> Sent:
        """Run ``call`` through the backend and relay its answer (or answer its refusal)."""
        try:
            answer = await asked(self.backend.forward(call))
        except (ClientError, UpstreamError) as exc:
            await self.refuse(request, call.request_id, exc, kind=kind_of(exc, "egress_refused"),
                              keep_alive=keep_alive)
            return Sent(keep_alive, 0)
        if not isinstance(answer.body, bytes):
            return await self._stream(answer.status, answer.headers, answer.body, call.request_id, request,
                                      keep_alive)
        data = render(answer.status, answer.headers, answer.body, request_id=call.request_id,
                      keep_alive=keep_alive, head_only=request.method == "HEAD")
        await self.write(data)
        return Sent(keep_alive, len(data))

    async def _stream(self, status: int, headers: Sequence[tuple[bytes, bytes]], body: BodyStream, request_id: str,
                      request: ProxyRequest, keep_alive: bool) -> Sent:
        """Relay a streamed answer as it arrives; a cut stream cuts the connection (RFC 9112 section 8)."""
        chunked = request.version == "1.1"  # an HTTP/1.0 client reads to the close instead
        keep_alive = keep_alive and chunked
        written = 0
        try:
            head = render_stream_head(status, headers, request_id=request_id, chunked=chunked, keep_alive=keep_alive)
            await self.write(head)
            written += len(head)
            if request.method != "HEAD":
                async for data in body:
                    if data:
                        framed = chunk(data) if chunked else data
                        await self.write(framed)
                        written += len(framed)
                if chunked:
                    await self.write(CHUNK_END)
                    written += len(CHUNK_END)
        except UpstreamError:
            self.writer.transport.abort()  # the body was cut upstream: no clean end may be faked
            raise Ended() from None
        finally:
            await body.aclose()
        return Sent(keep_alive, written)


async def asked(awaitable: Awaitable[_T]) -> _T:
    """The backend's answer; a fault in it (anything but a Portcullis refusal) becomes a 500
    ``internal`` problem document for the client and a traceback in the log, never a dropped
    connection without an answer or a record."""
    try:
        return await awaitable
    except (ClientError, UpstreamError, TunnelRefused):
        raise
    except Exception:
        log.exception("proxy backend failed")
        raise ClientError("backend_fault", code=ErrorCode.INTERNAL) from None


def kind_of(exc: ClientError | UpstreamError, default: str = "auth") -> str:
    """The audit decision's kind for a refusal (``<kind>:<reason>``)."""
    if exc.code is ErrorCode.INTERNAL:
        return "internal_error"
    if exc.code in (ErrorCode.SERVICE_UNAVAILABLE, ErrorCode.STORE_UNAVAILABLE):
        return "service_unavailable"
    if isinstance(exc, Forbidden):
        return "authz"
    if isinstance(exc, UpstreamError) and not isinstance(exc, CircuitOpen):
        return "upstream_error"
    return default


def crossing(headers: Headers) -> Headers:
    """The client's headers that go on to the pipeline (which applies the route's header rules)."""
    listed = connection_tokens(headers)
    return [(k, v) for k, v in headers if k not in _DROPPED and k not in listed and not k.startswith(b"proxy-")]
