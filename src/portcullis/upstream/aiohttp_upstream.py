"""Ingress upstream client on aiohttp: a pooled keep-alive ``ClientSession`` per backend.

Why aiohttp for now: it is the maintained choice with streaming both ways and per-phase timeouts.
It is also the costliest part of a pass-through (DESIGN section 6); the benchmark issue replaces it
on the ingress path behind the same ``Upstream`` protocol.

This module is the only place aiohttp exceptions exist: ``_translate`` maps them to
``UpstreamError`` subclasses. It never decompresses (``auto_decompress=False``): bytes pass as sent.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import yarl

from portcullis.errors import UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable
from portcullis.upstream.base import Timeouts, UpstreamRequest

__all__ = ["AiohttpUpstream"]

_CHUNK = 64 * 1024


@contextmanager
def _translate() -> Iterator[None]:
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout("upstream_timeout") from exc
    except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, ConnectionError) as exc:
        raise UpstreamUnavailable("upstream_unreachable") from exc
    except aiohttp.ClientPayloadError as exc:
        raise UpstreamProtocolError("upstream_payload") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamProtocolError("upstream_protocol") from exc


class _AiohttpResponse:
    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = [(k.lower(), v) for k, v in resp.raw_headers]

    def complete_body(self) -> bytes | None:
        return None

    async def iter_body(self) -> AsyncIterator[bytes]:
        with _translate():
            async for chunk in self._resp.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        self._resp.release()


class AiohttpUpstream:
    """One backend: base URL and a pooled session, built once per config load."""

    def __init__(
        self, base_url: str, *, pool_size: int, verify_tls: bool = True, ca_file: str | None = None
    ) -> None:
        self._base_url = base_url
        ssl_ctx: ssl.SSLContext | bool = verify_tls
        if ca_file:
            ssl_ctx = ssl.create_default_context(cafile=ca_file)
        self._connector_args: dict[str, Any] = {"limit": pool_size, "ssl": ssl_ctx, "ttl_dns_cache": 60}
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(**self._connector_args),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def send(self, request: UpstreamRequest, *, timeouts: Timeouts) -> _AiohttpResponse:
        timeout = aiohttp.ClientTimeout(
            total=timeouts.total_s, sock_connect=timeouts.connect_s, sock_read=timeouts.read_s
        )
        with _translate():
            resp = await self._get_session().request(
                request.method,
                yarl.URL(self._base_url + request.path_and_query, encoded=True),
                headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers],
                data=request.body,
                timeout=timeout,
                allow_redirects=False,
                compress=None,
            )
        return _AiohttpResponse(resp)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
            await asyncio.sleep(0)
