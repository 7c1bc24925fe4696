"""One ``CONNECT``: admitted by the backend, then spliced unread to the checked address, or read.

Why its own module: a tunnel has a life the plain requests do not (an address to dial, bytes both
ways, an end), and exactly one record, written when it ends, whatever ended it: a refusal before
the ``200`` (target, credentials, the pipeline's no), a failed connection, the client or upstream
closing, a timeout, a TLS handshake the client refused, the listener's drain.

- ``splice``: connect to the addresses the backend returned, in order, within the route's connect
  timeout (never resolving the name), answer ``200``, and copy (``splice``);
- ``intercept`` and ``read``: answer ``200``, end the client's TLS with a leaf from the CA
  (``intercept`` only), then read HTTP/1.1 requests inside and forward each under the
  ``CONNECT``'s identity, for ``scheme://host[:port]/path``; the ``Host`` of each must be the tunnel's.

What it refuses to do: dial an address the backend did not return, take TLS bytes sent before the
``200`` into an intercepted tunnel, or let a tunnel outlive ``tunnel_max_duration``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import replace

from portcullis.clock import Clock
from portcullis.egress.proxy.answer import CONNECTED, problem_for, render, render_problem_bytes
from portcullis.egress.proxy.authority import CertificateAuthority
from portcullis.egress.proxy.base import (
    ForwardRequest,
    ProxyIdentity,
    TunnelGrant,
    TunnelMode,
    TunnelRecord,
    TunnelRefused,
    TunnelRequest,
)
from portcullis.egress.proxy.exchange import Ended, Exchange, Sent, asked, crossing, kind_of
from portcullis.egress.proxy.reader import ProxyRequest, ReadRefused, RequestReader
from portcullis.egress.proxy.splice import splice
from portcullis.egress.proxy.target import Authority, connect_target, origin_target
from portcullis.errors import (
    ClientError,
    ErrorCode,
    Unauthenticated,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from portcullis.http.headers import get_one
from portcullis.ids import random_hex
from portcullis.server.response import CONTINUE

__all__ = ["Tunnel"]

log = logging.getLogger("portcullis.egress.proxy")


class Tunnel:
    """One ``CONNECT`` on ``exchange``'s connection, from admission to its record."""

    def __init__(self, exchange: Exchange, request: ProxyRequest, *, clock: Clock,
                 authority: CertificateAuthority | None) -> None:
        self._x = exchange
        self._request = request
        self._clock = clock
        self._authority = authority
        self._started = clock.monotonic()
        self._record = TunnelRecord(request_id=random_hex(128), client_ip=exchange.peer, host="", port=0, status=0,
                                    decision="", duration_s=0.0)

    async def run(self, reader: asyncio.StreamReader) -> None:
        x, request, record = self._x, self._request, self._record
        try:
            target = connect_target(request.target)
        except ClientError as exc:
            await self._refused(exc, f"invalid_request:{exc.reason}")
            return
        self._record = record = replace(record, host=target.host, port=target.port)
        try:
            identity = await x.identity(request, record.request_id)
        except Unauthenticated as exc:
            await self._refused(exc, f"auth:{exc.reason}", proxy_auth=True)
            return
        except ClientError as exc:
            await self._refused(exc, f"{kind_of(exc)}:{exc.reason}")
            return
        self._record = replace(record, identity=identity)
        try:
            grant = await asked(x.backend.admit_tunnel(TunnelRequest(identity, target.host, target.port,
                                                                     record.request_id, x.peer,
                                                                     crossing(request.headers))))
        except TunnelRefused as refused:
            answer = refused.answer
            self._closed(status=answer.status, decision=refused.decision)
            body = answer.body if isinstance(answer.body, bytes) else b""  # a refusal is a problem document
            with contextlib.suppress(Ended):
                await x.write(render(answer.status, answer.headers, body, request_id=record.request_id,
                                     keep_alive=False))
            return
        except (ClientError, UpstreamError) as exc:
            await self._refused(exc, f"{kind_of(exc, 'egress_refused')}:{exc.reason}")
            return
        self._record = replace(self._record, route=grant.route, mode=grant.mode)
        if grant.mode is TunnelMode.SPLICE:
            await self._splice(reader, grant)
        else:
            await self._read(reader, target, identity, grant.mode)

    async def _refused(self, exc: ClientError | UpstreamError, decision: str, *, proxy_auth: bool = False) -> None:
        problem = problem_for(exc, proxy_auth=proxy_auth)
        self._closed(status=problem.status, decision=decision)
        with contextlib.suppress(Ended):
            await self._x.write(render_problem_bytes(problem, self._record.request_id))

    def _closed(self, *, status: int, decision: str, ended: str = "", bytes_up: int = 0, bytes_down: int = 0,
                requests: int = 0) -> None:
        record = replace(self._record, duration_s=round(self._clock.monotonic() - self._started, 6), status=status,
                         decision=decision, ended=ended, bytes_up=bytes_up, bytes_down=bytes_down, requests=requests)
        try:
            self._x.backend.tunnel_closed(record)
        except Exception:
            log.exception("recording a tunnel failed request_id=%s", record.request_id)

    async def _splice(self, reader: asyncio.StreamReader, grant: TunnelGrant) -> None:
        x = self._x
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        failure: UpstreamError = UpstreamUnavailable("tunnel_connect_failed")
        for address in grant.addresses:  # the checked addresses only: the name is never resolved here
            try:
                async with asyncio.timeout(grant.connect_timeout_s):
                    upstream = await asyncio.open_connection(str(address), self._record.port,
                                                             limit=x.settings.splice.chunk)
                self._record = replace(self._record, address=str(address))
                break
            except TimeoutError:
                failure = UpstreamTimeout("tunnel_connect_timeout")
            except OSError:
                failure = UpstreamUnavailable("tunnel_connect_failed")
        if upstream is None:
            await self._refused(failure, f"upstream_error:{failure.reason}")
            return
        try:
            await x.write(CONNECTED)
        except Ended:
            upstream[1].transport.abort()
            self._closed(status=200, decision="allowed", ended="client_gone")
            return
        ended, up, down = "cancelled", 0, 0
        try:
            result = await splice((reader, x.writer), upstream, x.settings.splice, first_up=self._request.rest)
            ended, up, down = result.ended, result.bytes_up, result.bytes_down
        finally:
            self._closed(status=200, decision="allowed", ended=ended, bytes_up=up, bytes_down=down)

    async def _read(self, reader: asyncio.StreamReader, target: Authority, identity: ProxyIdentity,
                    mode: TunnelMode) -> None:
        x, request = self._x, self._request
        context: ssl.SSLContext | None = None
        if mode is TunnelMode.INTERCEPT:
            if self._authority is None:  # the config refuses intercept without a CA: a wiring fault
                await self._refused(ClientError("no_ca", code=ErrorCode.INTERNAL), "internal_error:no_ca")
                return
            if request.rest:
                refused = ClientError("early_tunnel_data", code=ErrorCode.REQUEST_MALFORMED)
                await self._refused(refused, "invalid_request:early_tunnel_data")
                return
            try:
                context = await self._authority.context_for(target.host)
            except Exception:
                log.exception("minting a certificate failed host=%s", target.host)
                fault = ClientError("leaf_mint_failed", code=ErrorCode.INTERNAL)
                await self._refused(fault, "internal_error:leaf_mint_failed")
                return
        ended, up, down, served = "closed", 0, 0, 0
        limits = x.settings.limits
        try:
            await x.write(CONNECTED)
            if context is not None:
                try:
                    await x.writer.start_tls(context, ssl_handshake_timeout=limits.first_byte_timeout)
                except (ssl.SSLError, OSError, TimeoutError):
                    ended = "tls_handshake_failed"  # e.g. the client does not trust the CA
                    return
            # A plain tunnel's bytes sent with the CONNECT are already its first request.
            inner = RequestReader(reader, limits, on_continue=lambda: x.writer.write(CONTINUE),
                                  max_body_bytes=x.settings.max_body_bytes, first=request.rest)
            async with asyncio.timeout(x.settings.splice.max_duration_s):
                while True:
                    try:
                        inside = await inner.next()
                    except ReadRefused as refused:
                        await x.refuse_read(refused)
                        return
                    if inside is None:
                        return
                    served += 1
                    up += len(inside.body)
                    sent = await self._inside(inside, target, identity, mode)
                    down += sent.bytes_down
                    if not sent.keep_alive or inside.upgrade:
                        return
        except TimeoutError:
            ended = "max_duration"
        except Ended:
            ended = "client_gone"
        except asyncio.CancelledError:
            ended = "cancelled"  # the listener's drain ran out
            raise
        finally:
            self._closed(status=200, decision="allowed", ended=ended, bytes_up=up, bytes_down=down, requests=served)

    async def _inside(self, request: ProxyRequest, target: Authority, identity: ProxyIdentity,
                      mode: TunnelMode) -> Sent:
        x = self._x
        request_id = random_hex(128)
        keep_alive = request.keep_alive and not request.upgrade
        scheme = "https" if mode is TunnelMode.INTERCEPT else "http"
        try:
            path = origin_target(request.target, get_one(request.headers, b"host"), target, scheme)
        except ClientError as exc:
            await x.refuse(request, request_id, exc, kind="invalid_request")
            return Sent(False, 0)
        port = "" if target.port == (443 if scheme == "https" else 80) else f":{target.port}"
        return await x.forward(ForwardRequest(
            identity=identity, method=request.method, url=f"{scheme}://{target.shown}{port}{path}",
            headers=crossing(request.headers), body=request.body, request_id=request_id, client_ip=x.peer,
            tunnel=mode,
        ), request, keep_alive)
