"""One client connection of the proxy door: absolute-form requests, ``CONNECT`` tunnels, interception.

Why this order for every request: the head is read and its framing checked (``reader``), then the
target (``target``), then ``Proxy-Authorization`` (``auth``, verified by the backend): an
unauthenticated client learns nothing about destinations, not even whether a target parses as a
route. Only then does the backend decide (route, SSRF guard, limits, budgets).

- **absolute-form** (``GET http://host/path``): one ``ForwardRequest`` through the backend; the
  answer is relayed with our framing. Keep-alive follows the client; pipelined requests are
  answered in order.
- **CONNECT host:port**: the backend admits the tunnel and names the checked addresses; the door
  connects to those addresses only (never resolving the name again), answers ``200`` and copies
  bytes both ways (``splice``) until either side closes or a limit ends it. One ``TunnelRecord``
  per ``CONNECT``, refused or not, when it ends.
- **CONNECT to an intercepted route**: the door answers ``200``, terminates TLS with a leaf the
  CA minted for the host (``authority``), and reads HTTP/1.1 requests inside; each becomes a
  ``ForwardRequest`` for ``https://host[:port]/path`` under the ``CONNECT``'s identity. Bytes the
  client sent before the ``200`` refuse the tunnel (they would be TLS the door never saw).
- **CONNECT to an http route** (undici tunnels ``http://`` URLs too): the same, without TLS: the
  plain requests inside are read and forwarded one by one, never spliced unread.

What it refuses to do: let anything but a problem document answer a refusal, open a tunnel to
an address the backend did not return, or leave a connection without a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import TypeVar

from portcullis.clock import Clock
from portcullis.egress.proxy.answer import CONNECTED, Problem, problem_for, render, render_problem_bytes
from portcullis.egress.proxy.auth import parse_proxy_authorization
from portcullis.egress.proxy.authority import CertificateAuthority
from portcullis.egress.proxy.base import (
    ForwardRequest,
    ProxyBackend,
    ProxyIdentity,
    TunnelGrant,
    TunnelMode,
    TunnelRecord,
    TunnelRefused,
    TunnelRequest,
)
from portcullis.egress.proxy.reader import ProxyRequest, ReadRefused, RequestReader
from portcullis.egress.proxy.splice import SpliceLimits, splice
from portcullis.egress.proxy.target import Authority, absolute_target, connect_target, origin_target
from portcullis.errors import (
    CircuitOpen,
    ClientError,
    ErrorCode,
    Forbidden,
    Unauthenticated,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from portcullis.http.headers import HOP_BY_HOP, connection_tokens, get_one
from portcullis.ids import random_hex
from portcullis.server.base import Headers
from portcullis.server.limits import ServerLimits
from portcullis.server.refusal import new_refusal
from portcullis.server.response import CONTINUE

__all__ = ["ProxyDoor", "ProxyDoorSettings"]

log = logging.getLogger("portcullis.egress.proxy")

# Never sent on: hop-by-hop fields (Proxy-Authorization among them), the context headers the door
# read, and Host (the pipeline sets it from the route's URL).
_DROPPED = HOP_BY_HOP | {b"host", b"x-workflow-id", b"x-execution-id"}


@dataclass(frozen=True, slots=True)
class ProxyDoorSettings:
    limits: ServerLimits
    splice: SpliceLimits
    max_body_bytes: int


@dataclass(frozen=True, slots=True)
class _Sent:
    keep_alive: bool
    bytes_down: int


class _Ended(Exception):
    """The connection is done (answered and closing)."""


class ProxyDoor:
    """Serves connections (``handle``) for one listener."""

    def __init__(self, backend: ProxyBackend, settings: ProxyDoorSettings, *, clock: Clock,
                 authority: CertificateAuthority | None = None) -> None:
        self._backend = backend
        self._settings = settings
        self._clock = clock
        self._authority = authority

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        """Serve one connection to its end; closes ``writer``."""
        writer.transport.set_write_buffer_limits(high=self._settings.limits.write_high_water)
        requests = RequestReader(reader, self._settings.limits, on_continue=lambda: writer.write(CONTINUE),
                                 max_body_bytes=self._settings.max_body_bytes)
        try:
            while True:
                try:
                    request = await requests.next()
                except ReadRefused as refused:
                    await self._refuse_read(writer, refused, peer)
                    return
                if request is None:
                    return
                if request.method == "CONNECT":
                    await self._connect(request, reader, writer, peer)
                    return
                keep_alive = await self._absolute(request, writer, peer)
                if not keep_alive or request.upgrade:
                    return
        except _Ended:
            return
        finally:
            if not writer.is_closing():
                writer.close()
            try:  # a client that does not read what is left of its answer cannot hold the socket
                async with asyncio.timeout(self._settings.limits.write_timeout):
                    await writer.wait_closed()
            except TimeoutError:
                writer.transport.abort()
            except Exception:  # noqa: S110 - reset by the peer while closing: nothing left to do
                pass

    # -- refusals --------------------------------------------------------------------------------
    async def _refuse_read(self, writer: asyncio.StreamWriter, refused: ReadRefused, peer: str) -> None:
        refusal = new_refusal(refused.code, refused.reason, refused.kind, peer=peer, scheme="http",
                              duration_s=0.0, answered=refused.answered, method=refused.method,
                              target=refused.target, headers=refused.headers)
        extra = self._backend.refused(refusal)
        if refused.answered:
            data = render_problem_bytes(Problem(refused.code, tuple(extra)), refusal.request_id,
                                        head_only=refused.method == "HEAD")
            await self._write(writer, data)

    async def _refuse(self, writer: asyncio.StreamWriter, request: ProxyRequest, peer: str, request_id: str,
                      exc: ClientError | UpstreamError, *, kind: str, proxy_auth: bool = False,
                      keep_alive: bool = False) -> None:
        """Record a refusal the door made (or the backend raised), then answer it."""
        problem = problem_for(exc, proxy_auth=proxy_auth)
        refusal = replace(new_refusal(problem.code, exc.reason, kind, peer=peer, scheme="http", duration_s=0.0,
                                      method=request.method, target=request.target, headers=request.headers),
                          request_id=request_id)
        extra = self._backend.refused(refusal)
        problem = replace(problem, headers=problem.headers + tuple(extra))
        await self._write(writer, render_problem_bytes(problem, request_id, keep_alive=keep_alive,
                                                       head_only=request.method == "HEAD"))

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if writer.is_closing():
            raise _Ended()
        writer.write(data)
        try:
            async with asyncio.timeout(self._settings.limits.write_timeout):
                await writer.drain()
        except (TimeoutError, ConnectionError):
            writer.transport.abort()
            raise _Ended() from None

    async def _identity(self, request: ProxyRequest, peer: str, request_id: str) -> ProxyIdentity:
        credentials = parse_proxy_authorization(request.headers)
        return await _asked(self._backend.authenticate(credentials, client_ip=peer, request_id=request_id))

    # -- absolute-form -----------------------------------------------------------------------
    async def _absolute(self, request: ProxyRequest, writer: asyncio.StreamWriter, peer: str) -> bool:
        request_id = random_hex(128)
        keep_alive = request.keep_alive and not request.upgrade
        try:
            target = absolute_target(request.target, get_one(request.headers, b"host"))
        except ClientError as exc:
            await self._refuse(writer, request, peer, request_id, exc, kind="invalid_request")
            return False
        try:
            identity = await self._identity(request, peer, request_id)
        except Unauthenticated as exc:
            await self._refuse(writer, request, peer, request_id, exc, kind="auth", proxy_auth=True)
            return False
        except ClientError as exc:  # authenticated, not allowed (scopes), or the key store is down
            await self._refuse(writer, request, peer, request_id, exc, kind=_kind(exc))
            return False
        url = f"{target.scheme}://{_shown(target.host)}:{target.port}{target.path_and_query}"
        sent = await self._send(writer, ForwardRequest(
            identity=identity, method=request.method, url=url, headers=_crossing(request.headers),
            body=request.body, request_id=request_id, client_ip=peer,
        ), request, peer, keep_alive)
        return sent.keep_alive

    async def _send(self, writer: asyncio.StreamWriter, call: ForwardRequest, request: ProxyRequest, peer: str,
                    keep_alive: bool) -> _Sent:
        try:
            answer = await _asked(self._backend.forward(call))
        except (ClientError, UpstreamError) as exc:
            await self._refuse(writer, request, peer, call.request_id, exc, kind=_kind(exc, "egress_refused"),
                               keep_alive=keep_alive)
            return _Sent(keep_alive, 0)
        data = render(answer.status, answer.headers, answer.body, request_id=call.request_id,
                      keep_alive=keep_alive, head_only=request.method == "HEAD")
        await self._write(writer, data)
        return _Sent(keep_alive, len(data))

    # -- CONNECT -----------------------------------------------------------------------------
    async def _connect(self, request: ProxyRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       peer: str) -> None:
        request_id = random_hex(128)
        started = self._clock.monotonic()
        record = TunnelRecord(request_id=request_id, client_ip=peer, host="", port=0, status=0, decision="",
                              duration_s=0.0)
        try:
            authority = connect_target(request.target)
        except ClientError as exc:
            await self._tunnel_refused(writer, record, started, exc, f"invalid_request:{exc.reason}")
            return
        record = replace(record, host=authority.host, port=authority.port)
        try:
            identity = await self._identity(request, peer, request_id)
        except Unauthenticated as exc:
            await self._tunnel_refused(writer, record, started, exc, f"auth:{exc.reason}", proxy_auth=True)
            return
        except ClientError as exc:
            await self._tunnel_refused(writer, record, started, exc, f"{_kind(exc)}:{exc.reason}")
            return
        record = replace(record, identity=identity)
        try:
            grant = await _asked(self._backend.admit_tunnel(TunnelRequest(identity, authority.host, authority.port,
                                                                          request_id, peer)))
        except TunnelRefused as refused:
            answer = refused.answer
            self._closed(replace(record, status=answer.status, decision=refused.decision), started)
            with contextlib.suppress(_Ended):
                await self._write(writer, render(answer.status, answer.headers, answer.body,
                                                 request_id=request_id, keep_alive=False))
            return
        except (ClientError, UpstreamError) as exc:
            await self._tunnel_refused(writer, record, started, exc, f"{_kind(exc, 'egress_refused')}:{exc.reason}")
            return
        record = replace(record, route=grant.route, mode=grant.mode)
        if grant.mode is TunnelMode.SPLICE:
            await self._tunnel(request, reader, writer, grant, record, started)
            return
        await self._read_tunnel(request, reader, writer, peer, authority, identity, record, started, grant.mode)

    async def _tunnel_refused(self, writer: asyncio.StreamWriter, record: TunnelRecord, started: float,
                              exc: ClientError | UpstreamError, decision: str, *, proxy_auth: bool = False) -> None:
        problem = problem_for(exc, proxy_auth=proxy_auth)
        self._closed(replace(record, status=problem.status, decision=decision), started)
        with contextlib.suppress(_Ended):
            await self._write(writer, render_problem_bytes(problem, record.request_id))

    def _closed(self, record: TunnelRecord, started: float) -> None:
        record = replace(record, duration_s=round(self._clock.monotonic() - started, 6))
        try:
            self._backend.tunnel_closed(record)
        except Exception:
            log.exception("recording a tunnel failed request_id=%s", record.request_id)

    async def _tunnel(self, request: ProxyRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      grant: TunnelGrant, record: TunnelRecord, started: float) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        failure: UpstreamError | None = None
        for address in grant.addresses:  # the checked addresses only: the name is never resolved here
            try:
                async with asyncio.timeout(grant.connect_timeout_s):
                    upstream = await asyncio.open_connection(str(address), record.port,
                                                             limit=self._settings.splice.chunk)
                record = replace(record, address=str(address))
                break
            except TimeoutError:
                failure = _timeout()
            except OSError:
                failure = _unreachable()
        if upstream is None:
            failure = failure or _unreachable()
            await self._tunnel_refused(writer, record, started, failure, f"upstream_error:{failure.reason}")
            return
        try:
            await self._write(writer, CONNECTED)
        except _Ended:
            upstream[1].transport.abort()
            self._closed(replace(record, status=200, decision="allowed", ended="client_gone"), started)
            return
        ended = "cancelled"
        result = None
        try:
            result = await splice((reader, writer), upstream, self._settings.splice, first_up=request.rest)
            ended = result.ended
        finally:
            self._closed(replace(record, status=200, decision="allowed", ended=ended,
                                 bytes_up=result.bytes_up if result else 0,
                                 bytes_down=result.bytes_down if result else 0), started)

    # -- tunnels the door reads (interception, plain http) -------------------------------------
    async def _read_tunnel(self, request: ProxyRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           peer: str, authority: Authority, identity: ProxyIdentity, record: TunnelRecord,
                           started: float, mode: TunnelMode) -> None:
        tls = mode is TunnelMode.INTERCEPT
        if tls and self._authority is None:  # the config refuses intercept without a CA: a wiring fault
            await self._tunnel_refused(writer, record, started, UpstreamError("no_ca"), "internal:no_ca")
            return
        if request.rest and tls:
            refused = ClientError("early_tunnel_data", code=ErrorCode.REQUEST_MALFORMED)
            await self._tunnel_refused(writer, record, started, refused, "invalid_request:early_tunnel_data")
            return
        record = replace(record, status=200, decision="allowed")
        ended, bytes_up, bytes_down, served = "closed", 0, 0, 0
        if tls:
            assert self._authority is not None
            try:
                context = await self._authority.context_for(authority.host)
            except Exception:
                log.exception("minting a certificate failed host=%s", authority.host)
                fault = ClientError("leaf_mint_failed", code=ErrorCode.INTERNAL)
                await self._tunnel_refused(writer, record, started, fault, "internal_error:leaf_mint_failed")
                return
        try:
            await self._write(writer, CONNECTED)
            if tls:
                try:
                    await writer.start_tls(context, ssl_handshake_timeout=self._settings.limits.first_byte_timeout)
                except (ssl.SSLError, OSError, TimeoutError):
                    ended = "tls_handshake_failed"  # e.g. the client does not trust the CA
                    return
            # A plain tunnel's bytes sent with the CONNECT are already its first request.
            inner = RequestReader(reader, self._settings.limits, on_continue=lambda: writer.write(CONTINUE),
                                  max_body_bytes=self._settings.max_body_bytes, first=request.rest)
            async with asyncio.timeout(self._settings.splice.max_duration_s):
                while True:
                    try:
                        inside = await inner.next()
                    except ReadRefused as refused:
                        await self._refuse_read(writer, refused, peer)
                        return
                    if inside is None:
                        return
                    served += 1
                    bytes_up += len(inside.body)
                    sent = await self._inside(inside, writer, peer, authority, identity, mode)
                    bytes_down += sent.bytes_down
                    if not sent.keep_alive or inside.upgrade:
                        return
        except TimeoutError:
            ended = "max_duration"
        except _Ended:
            ended = "client_gone"
        except asyncio.CancelledError:
            ended = "cancelled"  # the listener's drain ran out
            raise
        finally:
            self._closed(replace(record, ended=ended, bytes_up=bytes_up, bytes_down=bytes_down,
                                 requests=served), started)

    async def _inside(self, request: ProxyRequest, writer: asyncio.StreamWriter, peer: str, authority: Authority,
                      identity: ProxyIdentity, mode: TunnelMode) -> _Sent:
        request_id = random_hex(128)
        keep_alive = request.keep_alive and not request.upgrade and request.method != "CONNECT"
        scheme = "https" if mode is TunnelMode.INTERCEPT else "http"
        try:
            path = origin_target(request.target, get_one(request.headers, b"host"), authority, scheme)
        except ClientError as exc:
            await self._refuse(writer, request, peer, request_id, exc, kind="invalid_request")
            return _Sent(False, 0)
        port = "" if authority.port == (443 if scheme == "https" else 80) else f":{authority.port}"
        return await self._send(writer, ForwardRequest(
            identity=identity, method=request.method, url=f"{scheme}://{authority.shown}{port}{path}",
            headers=_crossing(request.headers), body=request.body, request_id=request_id, client_ip=peer,
            tunnel=mode,
        ), request, peer, keep_alive)


_T = TypeVar("_T")


async def _asked(awaitable: Awaitable[_T]) -> _T:
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


def _kind(exc: ClientError | UpstreamError, default: str = "auth") -> str:
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


def _crossing(headers: Headers) -> Headers:
    listed = connection_tokens(headers)
    return [(k, v) for k, v in headers if k not in _DROPPED and k not in listed and not k.startswith(b"proxy-")]


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _timeout() -> UpstreamError:
    return UpstreamTimeout("tunnel_connect_timeout")


def _unreachable() -> UpstreamError:
    return UpstreamUnavailable("tunnel_connect_failed")
