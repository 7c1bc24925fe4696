"""Resolve-then-pin: aiohttp connects only to the addresses the SSRF guard approved.

The "third-party API" is a real server on 127.0.0.1, reachable only through an explicit test
exception for 127.0.0.0/8 (the guard refuses loopback otherwise). Names are answered by a fixed
resolver, so a DNS-rebinding server is played without DNS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from ipaddress import ip_address, ip_network

import aiohttp
import pytest
from aiohttp import web

from portcullis.egress.pinning import BlockedDestination, GuardedResolver
from portcullis.egress.resolver import StaticResolver
from portcullis.egress.ssrf import GuardPolicy, SsrfGuard
from portcullis.testing import serve_app


@pytest.fixture
async def api() -> AsyncIterator[tuple[int, list[str]]]:
    seen: list[str] = []

    async def hello(request: web.Request) -> web.Response:
        seen.append(request.headers["Host"])
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/v1/hello", hello)
    async with serve_app(app) as port:
        yield port, seen


def session(
    resolver: StaticResolver, port: int, *, exception: bool = True, force_close: bool = False
) -> aiohttp.ClientSession:
    policy = GuardPolicy(allowed_networks=(ip_network("127.0.0.0/8"),) if exception else (),
                         allowed_ports=frozenset({port}))
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(SsrfGuard(resolver), policy), use_dns_cache=False,
                                     force_close=force_close)
    return aiohttp.ClientSession(connector=connector)


async def test_the_call_reaches_the_checked_address_with_the_original_host(api: tuple[int, list[str]]) -> None:
    port, seen = api
    resolver = StaticResolver({"api.partner.test": [[ip_address("127.0.0.1")]]})
    async with session(resolver, port) as s, s.get(f"http://api.partner.test:{port}/v1/hello") as r:
        assert r.status == 200 and await r.json() == {"ok": True}
    assert seen == [f"api.partner.test:{port}"]
    assert resolver.lookups == ["api.partner.test"]


async def test_a_rebinding_answer_is_refused_before_any_connection(api: tuple[int, list[str]]) -> None:
    port, seen = api
    # First answer: the (excepted) test server. Second: a private address outside the exception.
    resolver = StaticResolver({"rebind.test": [[ip_address("127.0.0.1")], [ip_address("10.0.0.7")]]})
    # A pooled connection stays on the address checked when it was opened; every new connection
    # is checked again (force_close makes each request open one).
    async with session(resolver, port, force_close=True) as s:
        async with s.get(f"http://rebind.test:{port}/v1/hello") as r:
            assert r.status == 200
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await s.get(f"http://rebind.test:{port}/v1/hello")
    assert isinstance(info.value.os_error, BlockedDestination)
    assert info.value.os_error.reason == "address_private"
    assert len(seen) == 1


async def test_without_the_exception_loopback_is_never_reached(api: tuple[int, list[str]]) -> None:
    port, seen = api
    resolver = StaticResolver({"localtest.me": [[ip_address("127.0.0.1")]]})
    async with session(resolver, port, exception=False) as s:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await s.get(f"http://localtest.me:{port}/v1/hello")
    assert isinstance(info.value.os_error, BlockedDestination)
    assert info.value.os_error.reason == "address_loopback"
    assert seen == []
