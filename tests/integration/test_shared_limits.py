"""Two gateways sharing one Redis (the machine's, under a fresh key prefix) count limits together."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml

from portcullis.admin.app import create_admin_app

pytestmark = pytest.mark.multi_instance  # gateways sharing one Redis


def shared(upstream_url: str, prefix: str, url: str = "redis://127.0.0.1:6379/0") -> str:
    return gateway_yaml(upstream_url, f"""
shared_state: {{url: "{url}", key_prefix: "{prefix}", instances: 2}}
routes:
  - name: open
    path: /open
    upstream: api
    auth: none
    rate_limits: [{{name: per-ip, key: ip, rates: ["3/minute"]}}]
""")


async def test_a_limit_holds_across_gateways_sharing_redis(
    make_gateway: GatewayFactory, upstream: UpstreamServer, redis_space: tuple[Any, str]
) -> None:
    _, prefix = redis_space
    first = await make_gateway(shared(upstream.url, prefix))
    second = await make_gateway(shared(upstream.url, prefix))
    statuses = []
    for i in range(6):
        gw = first if i % 2 == 0 else second
        statuses.append((await gw.client.get("/open")).status_code)
    assert statuses.count(200) == 3 and statuses.count(429) == 3  # 3 per minute in total, not per gateway
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_admin_app(first.app)),
                                 base_url="http://admin") as admin:
        ready = (await admin.get("/readyz")).json()
    assert ready["checks"]["shared_state"] == "ok"


async def test_an_unreachable_redis_degrades_to_the_local_share_and_stays_ready(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(shared(upstream.url, "pcltest:dead:", url="redis://127.0.0.1:1/0"))
    statuses = [(await gw.client.get("/open")).status_code for _ in range(3)]
    assert statuses == [200, 429, 429]  # 3 per minute over 2 instances: a local share of 1, never a 5xx
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_admin_app(gw.app)),
                                 base_url="http://admin") as admin:
        ready = await admin.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["shared_state"] == "degraded"
