"""The send phase's HTTP client: the lean HTTP/1.1 client, pinned to the addresses the guard checked.

Why not aiohttp (which this replaced): on the egress door it cost about a sixth of a call's CPU (a
request and a response object, timeout handles, a payload, multidict headers and a stream reader
per call, and header lists converted around it), where the ingress path's own client
(``upstream/http1``) does the same exchange on protocol callbacks. What the door needs beyond the
ingress path, it gets here:

- **Resolve-then-pin.** Each new connection asks the SSRF guard, under the route's policy, for the
  destination's addresses and goes only to one of those; the name is never resolved anywhere else
  (DNS rebinding), and a refusal ends the attempt before any connection (``egress_blocked:<reason>``,
  as before). A pooled connection stays on the address it was opened to.
- **TLS** with the system's CAs: the URL's host is sent as SNI and the certificate verified against
  it, whatever address the connection went to. One context for every pool (``system_tls``).
- **One pool per origin** (scheme, host, port) a route's calls reach: its own, and one per origin
  a redirect leads to (at most ``MAX_ORIGINS``, the oldest closed past that); at most
  ``POOL_SIZE`` connections each, an idle one not reused after ``IDLE_S``.
- **The request head aiohttp used to send**, so providers see what they saw: ``Host``, and
  ``Accept: */*``, ``Accept-Encoding: gzip, deflate`` and (with a body) ``Content-Type:
  application/octet-stream`` unless the caller sent its own. Answers are never decoded here.
- **The same error reasons** as before (``egress_timeout``, ``egress_unreachable``,
  ``egress_connection_failed``, ``egress_blocked:…``): the audit, the metrics and the breaker see
  no difference. No error carries the request (or the credential in it).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache
from urllib.parse import urlsplit

from portcullis.egress.response_guard import (
    DecodedSizeMeter,
    ResponseLimits,
    ResponseRefused,
    check_content_type,
    read_limited,
)
from portcullis.egress.ssrf import GuardPolicy, SsrfGuard, UnsafeUrl, parse_egress_url
from portcullis.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from portcullis.http.headers import HOP_BY_HOP, RawHeaders
from portcullis.upstream.base import Timeouts, UpstreamRequest
from portcullis.upstream.http1 import Http1Response, Http1Upstream

__all__ = ["IDLE_S", "MAX_ORIGINS", "POOL_SIZE", "Exchange", "PinnedClients", "PinnedResponse", "system_tls"]

POOL_SIZE = 100  # connections per origin, as aiohttp's connector had per route
IDLE_S = 15.0  # aiohttp's keep-alive timeout: an idle connection older than this is not reused
MAX_ORIGINS = 32  # pools one route keeps at once (its own origin, and where redirects led)
_RESPONSE_DROP = HOP_BY_HOP | {b"set-cookie"}  # the provider's hop-by-hop headers end here; its cookies too
_DEFAULTS = ((b"accept", b"*/*"), (b"accept-encoding", b"gzip, deflate"))


@cache
def system_tls() -> ssl.SSLContext:
    """The system's CAs, hostname verification on: made once per process (loading CAs is not free)."""
    return ssl.create_default_context()


@dataclass(frozen=True, slots=True)
class Exchange:
    """The provider's whole answer: status, the headers that cross (lower-case names, the bytes as
    received), the body as read."""

    status: int
    headers: RawHeaders
    body: bytes


class PinnedResponse:
    """An answer whose head has arrived and passed the content-type check; the body is read with
    ``read`` (whole, within the limits) or ``iter_body`` (as it arrives). ``aclose`` always."""

    __slots__ = ("_limits", "_resp", "content_type", "encoding", "headers", "status")

    def __init__(self, resp: Http1Response, limits: ResponseLimits, content_type: str | None) -> None:
        self._resp = resp
        self._limits = limits
        self.content_type = content_type
        self.status = resp.status
        self.headers: RawHeaders = [(k, v) for k, v in resp.headers if k not in _RESPONSE_DROP]  # names lower-case
        self.encoding: str | None = next((v.decode("latin-1") for k, v in resp.headers if k == b"content-encoding"),
                                         None)

    async def read(self) -> bytes:
        """The whole body, or ``ResponseRefused`` as soon as a limit is crossed."""
        data = self._resp.complete_body()
        if data is None:
            return await read_limited(self.iter_body(), self._limits, encoding=self.encoding)
        if len(data) > self._limits.max_bytes:
            raise ResponseRefused("response_too_large")
        if self._limits.max_decoded_bytes is not None:
            DecodedSizeMeter(self.encoding, self._limits.max_decoded_bytes).feed(data)
        return data

    async def iter_body(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive (no limit applied here); errors under the egress reasons."""
        try:
            async for chunk in self._resp.iter_body():
                yield chunk
        except UpstreamError as exc:
            raise egress_error(exc) from None

    async def aclose(self) -> None:
        """Back to the pool when the body was read to its end; otherwise the connection is dropped."""
        await self._resp.aclose()


class PinnedClients:
    """One route's clients, one per origin, each connection pinned to addresses the guard checked."""

    def __init__(self, guard: SsrfGuard, policy: GuardPolicy, *, tls: ssl.SSLContext | None = None) -> None:
        self._guard = guard
        self._policy = policy
        self._tls = tls
        self._clients: dict[tuple[str, str, int], Http1Upstream] = {}

    async def exchange(self, method: str, url: str, headers: RawHeaders, body: bytes | None, *,
                       limits: ResponseLimits, timeouts: Timeouts) -> Exchange:
        """One request and its whole answer, within ``limits``."""
        resp = await self.request(method, url, headers, body, limits=limits, timeouts=timeouts)
        try:
            return Exchange(resp.status, resp.headers, await resp.read())
        finally:
            await resp.aclose()

    async def request(self, method: str, url: str, headers: RawHeaders, body: bytes | None, *,
                      limits: ResponseLimits, timeouts: Timeouts) -> PinnedResponse:
        """Send, and wait for the answer's head (refused if its media type is not allowed).

        ``headers`` have lower-case names (the pipeline keeps them so) and go as given, in order,
        after ``host``; the defaults follow only where a name is absent."""
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        client = await self._client(scheme, host, port)
        shown = f"[{host}]" if ":" in host else host
        wire = [(b"host", _host_bytes(shown if parts.port is None else f"{shown}:{port}"))]
        wire.extend(headers)
        given = {name for name, _ in headers}
        wire.extend(pair for pair in _DEFAULTS if pair[0] not in given)
        if body is not None and b"content-type" not in given:
            wire.append((b"content-type", b"application/octet-stream"))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            resp = await client.send(UpstreamRequest(method, target, wire, body), timeouts=timeouts)
        except UpstreamError as exc:
            raise egress_error(exc) from None
        try:
            content_type = next((v.decode("latin-1") for k, v in resp.headers if k == b"content-type"), None)
            check_content_type(content_type, limits.content_types)
        except BaseException:
            await resp.aclose()
            raise
        return PinnedResponse(resp, limits, content_type)

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()

    async def _client(self, scheme: str, host: str, port: int) -> Http1Upstream:
        key = (scheme, host, port)
        client = self._clients.get(key)
        if client is not None:
            return client
        tls = None
        if scheme == "https":  # the CA bundle is read once per process, off the event loop
            tls = self._tls or await asyncio.to_thread(system_tls)
            client = self._clients.get(key)  # another call may have opened it meanwhile
            if client is not None:
                return client
        if len(self._clients) >= MAX_ORIGINS:
            await self._clients.pop(next(iter(self._clients))).aclose()
        client = self._clients[key] = self._open(scheme, host, port, tls)
        return client

    def _open(self, scheme: str, host: str, port: int, tls: ssl.SSLContext | None) -> Http1Upstream:
        origin = f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
        guard, policy = self._guard, self._policy

        async def addresses() -> list[str]:
            """The guard's verdict for this origin, now: every new connection is checked again."""
            try:
                target = parse_egress_url(origin + "/")
            except UnsafeUrl as exc:
                raise UpstreamUnavailable(f"egress_blocked:{exc.reason}") from None
            verdict = await guard.check_target(target, policy)
            if not verdict.allowed:
                raise UpstreamUnavailable(f"egress_blocked:{verdict.reason}")
            return [str(address) for address in verdict.addresses]

        return Http1Upstream(origin, pool_size=POOL_SIZE, idle_timeout_s=IDLE_S, ssl_context=tls, addresses=addresses)


def _host_bytes(value: str) -> bytes:
    try:
        return value.encode("ascii")
    except UnicodeEncodeError:
        return value.encode("idna")


def egress_error(exc: UpstreamError) -> UpstreamError:
    """The client's error under the reasons the door has always reported (audit, metrics, breaker)."""
    if isinstance(exc, ResponseRefused):
        return exc
    if isinstance(exc, UpstreamTimeout):
        return UpstreamTimeout("egress_timeout")
    if isinstance(exc, UpstreamUnavailable):
        if exc.reason.startswith("egress_blocked:"):
            return exc
        if exc.reason in ("upstream_unreachable", "upstream_tls_verify_failed"):
            return UpstreamUnavailable("egress_unreachable")
    return UpstreamUnavailable("egress_connection_failed")
