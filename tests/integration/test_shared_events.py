"""Two gateways sharing one Redis hear each other: revocations, breaker states and budgets.

Both gateways run on manual clocks that never move, so a cached key never expires on its own: when
the second gateway refuses a key revoked on the first, only the broadcast can have told it. Waits
are bounded polls of what a client sees, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from ipaddress import ip_address
from typing import Any

import pytest
from tests.conftest import PEPPER, Gateway, GatewayFactory, UpstreamServer, gateway_yaml

from portcullis.egress.breaker import BreakerState
from portcullis.egress.resolver import StaticResolver

pytestmark = pytest.mark.multi_instance  # gateways sharing one Redis


def config(upstream_url: str, prefix: str) -> str:
    return gateway_yaml(upstream_url, f"""
shared_state: {{url: "redis://127.0.0.1:6379/0", key_prefix: "{prefix}", instances: 2}}
keys: {{pepper: "{PEPPER}", cache_ttl: 1h}}
routes:
  - {{name: orders, path: /orders, upstream: api, auth: {{api_key: {{}}}}}}
egress:
  budgets: {{execution_calls: 0, workflow_calls_per_day: 3}}
  routes:
    - {{name: partner, url: "http://api.partner.test:9", allow_http: true, allow_networks: [127.0.0.0/8]}}
""", keys=False)


async def within(seconds: float, check: Callable[[], Awaitable[bool]]) -> float:
    """Poll ``check`` until true; return how long it took, or fail after ``seconds``."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(seconds):
        while not await check():
            await asyncio.sleep(0.01)
    return loop.time() - started


async def pair(make_gateway: GatewayFactory, upstream: UpstreamServer, prefix: str) -> tuple[Gateway, Gateway]:
    resolver = StaticResolver({"api.partner.test": [[ip_address("127.0.0.1")]]})
    first = await make_gateway(config(upstream.url, prefix), resolver=resolver)
    second = await make_gateway(config(upstream.url, prefix), resolver=resolver)
    for gw in (first, second):
        shared = gw.services.shared
        assert shared is not None
        await asyncio.wait_for(shared.events.connected.wait(), 5)
    return first, second


async def test_a_key_revoked_on_one_gateway_is_refused_by_the_other_within_a_second(
    make_gateway: GatewayFactory, upstream: UpstreamServer, redis_space: tuple[Any, str]
) -> None:
    first, second = await pair(make_gateway, upstream, redis_space[1])
    key = await first.key("alice")
    headers = {"Authorization": f"Bearer {key}"}
    assert (await second.client.get("/orders", headers=headers)).status_code == 200  # now cached there, for 1 h
    async with await first.admin() as api:
        answer = await api.post(f"/keys/{key.split('_')[1]}/revoke")
    assert answer.json() == {"status": "revoked", "key_id": key.split("_")[1], "broadcast": True}

    async def refused() -> bool:
        return (await second.client.get("/orders", headers=headers)).status_code == 401

    assert await within(1.0, refused) < 1.0


async def test_an_operator_opening_a_breaker_on_one_gateway_opens_it_on_the_other(
    make_gateway: GatewayFactory, upstream: UpstreamServer, redis_space: tuple[Any, str]
) -> None:
    first, second = await pair(make_gateway, upstream, redis_space[1])
    assert second.runtime.egress is not None
    breaker = second.runtime.egress.breaker("partner")
    async with await first.admin() as api:
        assert (await api.post("/egress/breakers/partner/open")).json()["state"] == "forced_open"

    async def opened() -> bool:
        return breaker.state is BreakerState.FORCED_OPEN

    await within(1.0, opened)
    async with await first.admin() as api:
        await api.post("/egress/breakers/partner/reset")

    async def closed() -> bool:
        return breaker.state is BreakerState.CLOSED

    await within(1.0, closed)


async def test_a_breaker_opened_by_failures_is_open_on_the_other_and_on_a_gateway_started_later(
    make_gateway: GatewayFactory, upstream: UpstreamServer, redis_space: tuple[Any, str]
) -> None:
    first, second = await pair(make_gateway, upstream, redis_space[1])
    assert first.runtime.egress is not None and second.runtime.egress is not None
    opener = first.runtime.egress.breaker("partner")
    for _ in range(10):  # the provider is down: ten failures open it (min_calls 10 by default)
        opener.record(opener.acquire(), failed=True, duration_s=0.01)
    assert opener.state is BreakerState.OPEN

    async def open_on_second() -> bool:
        return second.runtime.egress is not None and \
            second.runtime.egress.breaker("partner").state is BreakerState.OPEN

    await within(1.0, open_on_second)
    third = await make_gateway(config(upstream.url, redis_space[1]))
    assert third.runtime.egress is not None
    assert third.runtime.egress.breaker("partner").state is BreakerState.OPEN  # read from Redis at start


async def test_a_budget_is_spent_once_across_gateways(
    make_gateway: GatewayFactory, upstream: UpstreamServer, redis_space: tuple[Any, str]
) -> None:
    first, second = await pair(make_gateway, upstream, redis_space[1])
    key = await first.key("alice")
    headers = {"Authorization": f"Bearer {key}", "X-Workflow-Id": "wf-1", "X-Execution-Id": "ex-1"}
    statuses = []
    for i in range(6):  # the provider is unreachable (port 9); budgets are spent before sending
        gw = first if i % 2 == 0 else second
        answer = await gw.client.get("/egress/partner/x", headers=headers)
        statuses.append(answer.status_code)
    assert statuses.count(429) == 3, statuses  # 3 per workflow per day in total, not per gateway
