"""One client connection of the proxy door: its requests in order, each forwarded or a tunnel.

Why this order for every request: the head is read and its framing checked (``reader``), then the
target (``target``), then ``Proxy-Authorization`` (``auth``, verified by the backend): an
unauthenticated client learns nothing about destinations, not even whether a target parses as a
route. Only then does the backend decide (route, SSRF guard, limits, budgets).

- **absolute-form** (``GET http://host/path``): one ``ForwardRequest`` through the backend; the
  answer is relayed with the door's framing (``exchange``). Keep-alive follows the client;
  pipelined requests are answered in order.
- **CONNECT host:port**: a ``tunnel.Tunnel``, the last thing on the connection (its bytes stop
  being HTTP to the door): spliced unread to the address the backend checked, or read request by
  request (interception with the gateway's CA, or a plain-http route).

What it refuses to do: let anything but a problem document answer a refusal, or leave a connection
without a deadline (the reader's for input, the exchange's for output, the splice's for tunnels).
"""

from __future__ import annotations

import asyncio

from portcullis.clock import Clock
from portcullis.egress.proxy.authority import CertificateAuthority
from portcullis.egress.proxy.base import ForwardRequest, ProxyBackend
from portcullis.egress.proxy.exchange import Ended, Exchange, ProxyDoorSettings, crossing, kind_of
from portcullis.egress.proxy.reader import ProxyRequest, ReadRefused, RequestReader
from portcullis.egress.proxy.target import absolute_target
from portcullis.egress.proxy.tunnel import Tunnel
from portcullis.errors import ClientError, Unauthenticated
from portcullis.http.headers import get_one
from portcullis.ids import random_hex
from portcullis.server.response import CONTINUE

__all__ = ["ProxyDoor", "ProxyDoorSettings"]


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
        settings = self._settings
        writer.transport.set_write_buffer_limits(high=settings.limits.write_high_water)
        exchange = Exchange(self._backend, settings, writer, peer)
        requests = RequestReader(reader, settings.limits, on_continue=lambda: writer.write(CONTINUE),
                                 max_body_bytes=settings.max_body_bytes)
        try:
            while True:
                try:
                    request = await requests.next()
                except ReadRefused as refused:
                    await exchange.refuse_read(refused)
                    return
                if request is None:
                    return
                if request.method == "CONNECT":
                    await Tunnel(exchange, request, clock=self._clock, authority=self._authority).run(reader)
                    return
                if not await self._absolute(exchange, request) or request.upgrade:
                    return
        except Ended:
            return
        finally:
            await exchange.close()

    @staticmethod
    async def _absolute(exchange: Exchange, request: ProxyRequest) -> bool:
        """Forward one absolute-form request; whether the connection stays open."""
        request_id = random_hex(128)
        keep_alive = request.keep_alive and not request.upgrade
        try:
            target = absolute_target(request.target, get_one(request.headers, b"host"))
        except ClientError as exc:
            await exchange.refuse(request, request_id, exc, kind="invalid_request")
            return False
        try:
            identity = await exchange.identity(request, request_id)
        except Unauthenticated as exc:
            await exchange.refuse(request, request_id, exc, kind="auth", proxy_auth=True)
            return False
        except ClientError as exc:  # authenticated, not allowed (scopes), or the key store is down
            await exchange.refuse(request, request_id, exc, kind=kind_of(exc))
            return False
        host = f"[{target.host}]" if ":" in target.host else target.host
        sent = await exchange.forward(ForwardRequest(
            identity=identity, method=request.method, url=f"{target.scheme}://{host}:{target.port}"
            f"{target.path_and_query}", headers=crossing(request.headers), body=request.body,
            request_id=request_id, client_ip=exchange.peer,
        ), request, keep_alive)
        return sent.keep_alive
