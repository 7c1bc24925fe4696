"""CORS through a real gateway: preflights are answered before authentication; foreign origins get nothing."""

from __future__ import annotations

from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml

ROUTES = """
routes:
  - name: orders
    methods: [GET, POST]
    path: "/orders/{order_id}"
    upstream: api
    cors:
      allow_origins: ["https://app.example.com"]
      allow_methods: [GET, POST]
      allow_headers: [x-api-key, content-type]
      allow_credentials: true
"""

PREFLIGHT = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "x-api-key, content-type"}


async def test_a_preflight_from_an_allowed_origin_is_answered_without_credentials(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    r = await gw.client.options("/orders/1", headers=PREFLIGHT)
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert upstream.seen == []


async def test_a_preflight_from_another_origin_is_refused(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    r = await gw.client.options("/orders/1", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert r.status_code == 403
    assert r.json()["code"] == "cors.forbidden"
    assert "access-control-allow-origin" not in r.headers
    assert r.headers["x-frame-options"] == "DENY"


async def test_an_authenticated_cross_origin_call_gets_cors_headers(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    key = await gw.key("alice")
    ok = await gw.client.get("/orders/1", headers={"X-API-Key": key, "Origin": "https://app.example.com"})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://app.example.com"
    foreign = await gw.client.get("/orders/1", headers={"X-API-Key": key, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in foreign.headers
