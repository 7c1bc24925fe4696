"""The discovery cache against a real metadata server on 127.0.0.1: what it accepts, how it refreshes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from portcullis.identity.oidc_discovery import DiscoveryCache, DiscoveryFailed, check_endpoint
from portcullis.testing import ManualClock, catch_all, serve_app

ISSUER = "https://op.example"


@pytest.mark.parametrize(("url", "hosts", "ok"), [
    ("https://op.example/jwks", (), True),
    ("https://op.example:443/jwks", (), True),  # the default port is the same origin
    ("https://keys.example/jwks", (), False),  # another host, not listed
    ("https://keys.example/jwks", ("keys.example",), True),
    ("https://KEYS.example/jwks", ("keys.example",), True),  # host names are case-insensitive
    ("https://op.example:8443/jwks", (), False),  # another port is another origin (RFC 6454)
    ("http://op.example/jwks", (), False),  # downgrade to plain http
    ("https://user@op.example/jwks", (), False),
    ("https://op.example/jwks#frag", (), False),
    ("ftp://op.example/jwks", (), False),
    ("https://op.example.evil.test/jwks", (), False),  # a suffix is not the host
    (42, (), False),
], ids=["same-origin", "default-port", "other-host", "listed-host", "listed-host-case", "other-port",
        "http-downgrade", "userinfo", "fragment", "ftp", "suffix-host", "not-a-string"])
def test_endpoint_must_be_on_the_issuers_origin_or_a_listed_host(url: object, hosts: tuple[str, ...],
                                                                   ok: bool) -> None:
    if ok:
        assert check_endpoint(url, issuer=ISSUER, allow_http=False, hosts=frozenset(hosts)) == url
    else:
        with pytest.raises(DiscoveryFailed):
            check_endpoint(url, issuer=ISSUER, allow_http=False, hosts=frozenset(hosts))


@dataclass
class Metadata:
    url: str = ""
    document: dict[str, Any] | None = None
    status: int = 200
    hits: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        await self.gate.wait()
        assert request.path == "/.well-known/openid-configuration"
        body = self.document if self.document is not None else {"issuer": self.url, "jwks_uri": self.url + "/jwks"}
        return web.Response(text=json.dumps(body), status=self.status, content_type="application/json")


@pytest.fixture
async def metadata() -> AsyncIterator[Metadata]:
    server = Metadata()
    server.gate.set()
    async with serve_app(catch_all(server.handle)) as port:
        server.url = f"http://127.0.0.1:{port}"
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


def _cache(metadata: Metadata, session: aiohttp.ClientSession, clock: ManualClock) -> DiscoveryCache:
    return DiscoveryCache(metadata.url, clock=clock, session_factory=lambda: session, allow_http=True,
                          ttl_s=600, min_refresh_interval_s=30, max_stale_s=3600)


async def test_metadata_is_fetched_once_per_ttl(metadata: Metadata, session: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    cache = _cache(metadata, session, clock)
    assert await cache.jwks_uri() == metadata.url + "/jwks"
    clock.advance(599)
    await cache.metadata()
    assert metadata.hits == 1
    clock.advance(1)
    await cache.metadata()
    assert metadata.hits == 2


async def test_concurrent_first_lookups_share_one_fetch(metadata: Metadata, session: aiohttp.ClientSession) -> None:
    cache = _cache(metadata, session, ManualClock())
    metadata.gate.clear()
    lookups = [asyncio.create_task(cache.metadata()) for _ in range(10)]
    while metadata.hits == 0:  # bounded by the test timeout: the one fetch reaches the server
        await asyncio.sleep(0)
    metadata.gate.set()
    await asyncio.gather(*lookups)
    assert metadata.hits == 1


async def test_failed_refresh_serves_the_last_good_document_and_retries_after_the_interval(
    metadata: Metadata, session: aiohttp.ClientSession
) -> None:
    clock = ManualClock()
    cache = _cache(metadata, session, clock)
    good = await cache.metadata()
    metadata.status = 500
    clock.advance(600)
    assert await cache.metadata() == good  # stale-while-error
    assert await cache.metadata() == good
    assert metadata.hits == 2  # the failure holds the next attempt back
    clock.advance(30)
    await cache.metadata()
    assert metadata.hits == 3


async def test_stale_document_is_dropped_after_its_limit(metadata: Metadata, session: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    cache = _cache(metadata, session, clock)
    await cache.metadata()
    metadata.status = 500
    clock.advance(600 + 3600)
    with pytest.raises(DiscoveryFailed):
        await cache.metadata()


async def test_document_of_another_issuer_is_never_used(metadata: Metadata, session: aiohttp.ClientSession) -> None:
    metadata.document = {"issuer": "https://attacker.example", "jwks_uri": "https://attacker.example/jwks"}
    cache = _cache(metadata, session, ManualClock())
    with pytest.raises(DiscoveryFailed, match="issuer differs"):
        await cache.metadata()
