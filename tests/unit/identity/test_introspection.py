"""The introspection client against a real endpoint on 127.0.0.1: caching by hash, bounds, single flight."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from portcullis.errors import IdentityProviderUnavailable, Unauthenticated
from portcullis.identity.claims import ClaimNames
from portcullis.identity.introspection import IntrospectionSettings, TokenIntrospector
from portcullis.testing import ManualClock, catch_all, serve_app

NOW = 1_700_000_000


@dataclass
class Endpoint:
    url: str = ""
    answer: dict[str, Any] = field(default_factory=lambda: {"active": True, "sub": "svc", "aud": "api",
                                                           "exp": NOW + 3600})
    calls: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        await self.gate.wait()
        return web.Response(text=json.dumps(self.answer), content_type="application/json")


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    server = Endpoint()
    server.gate.set()
    async with serve_app(catch_all(server.handle)) as port:
        server.url = f"http://127.0.0.1:{port}/introspect"
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


def _introspector(endpoint: Endpoint, session: aiohttp.ClientSession, clock: ManualClock) -> TokenIntrospector:
    settings = IntrospectionSettings(
        issuer_name="op", issuer="https://op.example", endpoint=endpoint.url, client_id="gw", audiences=("api",),
        required_claims=("exp",), claim_names=ClaimNames(), leeway_s=0, timeout_s=2, cache_ttl_s=60,
        negative_cache_ttl_s=10, cache_size=100, max_response_bytes=4096,
    )

    async def secret() -> str:
        return "s3cret"

    return TokenIntrospector(settings, clock=clock, session_factory=lambda: session, client_secret=secret)


async def test_positive_answer_is_reused_for_cache_ttl_then_asked_again(
    endpoint: Endpoint, session: aiohttp.ClientSession
) -> None:
    clock = ManualClock(wall=NOW)
    introspector = _introspector(endpoint, session, clock)
    assert (await introspector.verify("tok")).consumer_id == "svc"
    clock.advance(59)
    assert introspector.verify_cached("tok") is not None
    clock.advance(1)
    assert introspector.verify_cached("tok") is None
    await introspector.verify("tok")
    assert endpoint.calls == 2


async def test_negative_answer_is_remembered_briefly(endpoint: Endpoint, session: aiohttp.ClientSession) -> None:
    clock = ManualClock(wall=NOW)
    endpoint.answer = {"active": False}
    introspector = _introspector(endpoint, session, clock)
    for _ in range(3):
        with pytest.raises(Unauthenticated, match="inactive"):
            await introspector.verify("bad")
    assert endpoint.calls == 1
    clock.advance(10)
    with pytest.raises(Unauthenticated):
        await introspector.verify("bad")
    assert endpoint.calls == 2


async def test_concurrent_verifications_of_one_token_share_one_call(
    endpoint: Endpoint, session: aiohttp.ClientSession
) -> None:
    introspector = _introspector(endpoint, session, ManualClock(wall=NOW))
    endpoint.gate.clear()
    waiting = [asyncio.create_task(introspector.verify("tok")) for _ in range(25)]
    while endpoint.calls == 0:  # bounded by the test timeout: the one call reaches the endpoint
        await asyncio.sleep(0)
    endpoint.gate.set()
    assert {p.consumer_id for p in await asyncio.gather(*waiting)} == {"svc"}
    assert endpoint.calls == 1


async def test_an_unreachable_endpoint_is_unavailable_not_a_refusal(session: aiohttp.ClientSession) -> None:
    endpoint = Endpoint(url="http://127.0.0.1:9/introspect")  # discard port: nothing listens
    introspector = _introspector(endpoint, session, ManualClock(wall=NOW))
    with pytest.raises(IdentityProviderUnavailable):
        await introspector.verify("tok")
    assert introspector.cached_answers == 0  # an outage is not remembered as the token's answer
