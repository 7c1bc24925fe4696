"""Rate limits through a real gateway: 429 with Retry-After and RateLimit headers; windows on a manual clock."""

from __future__ import annotations

from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml

ROUTES = """
rate_limits:
  - {name: global, key: global, rates: ["1000/second"]}
routes:
  - name: orders
    path: "/orders/{order_id}"
    upstream: api
    rate_limits:
      - {name: per-consumer, key: consumer, rates: ["3/minute", "5/hour"]}
  - name: public
    path: "/public"
    upstream: api
    auth: none
    rate_limits:
      - {name: per-ip, key: ip, rates: ["2/second"]}
"""


async def test_fourth_request_in_a_minute_gets_429_with_retry_after(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    key = await gw.key("alice")
    statuses = [(await gw.client.get("/orders/1", headers={"X-API-Key": key})).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    r = await gw.client.get("/orders/1", headers={"X-API-Key": key})
    assert r.json()["code"] == "limit.exceeded"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert "per-consumer" in r.headers["ratelimit-policy"]
    assert (await gw.audit_records())[-1]["decision"] == "rate_limited:per-consumer"
    assert len(upstream.seen) == 3


async def test_successful_responses_carry_ratelimit_headers(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    key = await gw.key("alice")
    r = await gw.client.get("/orders/1", headers={"X-API-Key": key})
    assert r.status_code == 200
    assert "ratelimit" in r.headers and "ratelimit-policy" in r.headers


async def test_limits_are_per_consumer(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    a, b = await gw.key("alice"), await gw.key("bob")
    for _ in range(3):
        assert (await gw.client.get("/orders/1", headers={"X-API-Key": a})).status_code == 200
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": a})).status_code == 429
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": b})).status_code == 200


async def test_the_minute_window_refills_but_the_hour_window_holds(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    key = await gw.key("alice")
    ok = 0
    for _ in range(3):  # 3 minutes, 3 requests each: the hour allows only 5 in total
        for _ in range(3):
            if (await gw.client.get("/orders/1", headers={"X-API-Key": key})).status_code == 200:
                ok += 1
        gw.clock.advance(61)
    assert ok == 5


TWO_RULES = """
routes:
  - name: orders
    path: "/orders/{order_id}"
    upstream: api
    rate_limits:
      - {name: per-consumer, key: consumer, rates: ["5/minute"]}
      - {name: per-route, key: route, rates: ["3/second"]}
"""


async def test_a_request_refused_by_one_limit_spends_nothing_from_the_others(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, TWO_RULES))
    key = await gw.key("alice")
    first = [(await gw.client.get("/orders/1", headers={"X-API-Key": key})).status_code for _ in range(13)]
    assert first == [200] * 3 + [429] * 10  # the route's 3/second refuses; alice's 5/minute must be untouched
    gw.clock.advance(1)
    after = [(await gw.client.get("/orders/1", headers={"X-API-Key": key})).status_code for _ in range(3)]
    # had the 10 refusals spent from alice's minute, none of these would pass
    assert after == [200, 200, 429]
    assert (await gw.audit_records())[-1]["decision"] == "rate_limited:per-consumer"


async def test_per_ip_limit_on_a_public_route(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    statuses = [(await gw.client.get("/public")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    gw.clock.advance(1)
    assert (await gw.client.get("/public")).status_code == 200


async def test_forged_forwarding_headers_do_not_escape_the_per_ip_limit(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    statuses = []
    for i in range(4):
        r = await gw.client.get("/public", headers={
            "X-Forwarded-For": f"10.0.0.{i}", "X-Real-IP": f"10.1.0.{i}", "True-Client-IP": f"10.2.0.{i}",
            "Forwarded": f"for=10.3.0.{i}",
        })
        statuses.append(r.status_code)
    assert statuses == [200, 200, 429, 429]
    assert {rec["client_ip"] for rec in await gw.audit_records()} == {"127.0.0.1"}
