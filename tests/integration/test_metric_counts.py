"""Counters an operator alerts on move by exactly what real traffic did, read from ``/metrics``.

Each test drives requests through a real gateway (and, for egress, a real provider on 127.0.0.1
named through a fixed resolver) and reads the exposition text the admin listener serves
(``GatewayMetrics.render``), so a counter that is renamed, relabelled or fed twice fails here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from ipaddress import ip_address
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import Gateway, GatewayFactory, UpstreamServer, gateway_yaml

from portcullis.egress.resolver import StaticResolver
from portcullis.testing import catch_all, serve_app
from portcullis.vault import generate_master_key

CONTEXT = {"X-Workflow-Id": "wf-1", "X-Execution-Id": "ex-1"}


def sample(gw: Gateway, name: str, **labels: str) -> float:
    """The value of one sample in the gateway's ``/metrics`` text (0 when it has not appeared yet)."""
    for family in text_string_to_metric_families(gw.services.metrics.render().decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


async def test_every_request_a_rate_limit_refuses_is_one_hit_of_that_limit(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, """
rate_limits:
  - {name: global, key: global, rates: ["1000/second"]}
routes:
  - name: public
    path: /public
    upstream: api
    auth: none
    rate_limits:
      - {name: per-ip, key: ip, rates: ["2/minute"]}
"""))
    statuses = [(await gw.client.get("/public")).status_code for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429]
    assert sample(gw, "portcullis_rate_limit_hits_total", limit="per-ip") == 3
    assert sample(gw, "portcullis_rate_limit_hits_total", limit="global") == 0
    gw.clock.advance(60)  # the window refills: an admitted request adds nothing
    assert (await gw.client.get("/public")).status_code == 200
    assert sample(gw, "portcullis_rate_limit_hits_total", limit="per-ip") == 3


@pytest.fixture
async def provider() -> AsyncIterator[tuple[int, list[int]]]:
    """A provider that answers with the statuses queued in the list it yields (then 200)."""
    queued: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"ok": True}, status=queued.pop(0) if queued else 200)

    async with serve_app(catch_all(handle)) as port:
        yield port, queued


async def egress_gateway(make_gateway: GatewayFactory, port: int, *, budgets: str, route_extra: str) -> Any:
    yaml = gateway_yaml("http://127.0.0.1:9", f"""
routes:
  - {{name: health, path: /health, upstream: api, auth: none}}
egress:
  budgets: {budgets}
  routes:
    - name: partner
      url: "http://api.partner.test:{port}"
      allow_http: true
      allow_networks: [127.0.0.0/8]
{route_extra}
""")
    return await make_gateway(yaml, env={"PORTCULLIS_SECRET_KEY": generate_master_key()},
                              resolver=StaticResolver({"api.partner.test": [[ip_address("127.0.0.1")]]}))


async def test_egress_cost_counts_what_each_answered_call_cost_and_nothing_for_refused_calls(
    make_gateway: GatewayFactory, provider: tuple[int, list[int]]
) -> None:
    port, _ = provider
    gw = await egress_gateway(make_gateway, port, budgets="{execution_cost: 5}", route_extra="""\
      cost: 1.5
      costs:
        - {path: "/v1/search", cost: 2}
""")
    key = await gw.key("agent-7")
    headers = {"X-API-Key": key, **CONTEXT}
    assert (await gw.client.get("/egress/partner/v1/items", headers=headers)).status_code == 200
    assert sample(gw, "portcullis_egress_cost_total", route="partner") == 1.5
    assert (await gw.client.get("/egress/partner/v1/search", headers=headers)).status_code == 200
    assert sample(gw, "portcullis_egress_cost_total", route="partner") == 3.5
    # 3.5 spent of 5: a 2-cost call is refused by the budget before it is sent, and costs nothing.
    refused = await gw.client.get("/egress/partner/v1/search", headers=headers)
    assert (refused.status_code, refused.json()["code"]) == (429, "budget.exhausted")
    assert sample(gw, "portcullis_egress_cost_total", route="partner") == 3.5


async def test_egress_retries_count_each_attempt_after_the_first(
    make_gateway: GatewayFactory, provider: tuple[int, list[int]]
) -> None:
    port, queued = provider
    gw = await egress_gateway(make_gateway, port, budgets="{execution_calls: 10}",
                              route_extra="      retry: {max_attempts: 3}\n")
    key = await gw.key("agent-7")
    headers = {"X-API-Key": key, **CONTEXT}
    queued.extend([503, 502])  # two failures, then the answer: three attempts, two retries
    first = await gw.client.get("/egress/partner/v1/items", headers=headers)
    assert (first.status_code, first.headers["x-egress-attempts"]) == (200, "3")
    assert sample(gw, "portcullis_egress_retries_total", route="partner") == 2
    second = await gw.client.get("/egress/partner/v1/items", headers=headers)
    assert (second.status_code, second.headers["x-egress-attempts"]) == (200, "1")
    assert sample(gw, "portcullis_egress_retries_total", route="partner") == 2
    queued.append(503)  # a POST is not retried (RFC 9110 section 9.2.2): no retry is counted
    post = await gw.client.post("/egress/partner/v1/items", headers=headers, json={})
    assert (post.status_code, post.headers["x-egress-attempts"]) == (503, "1")
    assert sample(gw, "portcullis_egress_retries_total", route="partner") == 2
