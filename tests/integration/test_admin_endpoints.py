"""The admin listener's answers: readiness follows the store; revocation takes effect at once."""

from __future__ import annotations

import pytest
from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml

ROUTES = """
routes:
  - {name: orders, path: "/orders/{order_id}", upstream: api}
"""


async def test_readyz_reports_an_unreachable_store_with_503(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    admin = await gw.admin()
    async with admin:
        assert (await admin.get("/readyz")).status_code == 200
        await gw.services.store.aclose()
        r = await admin.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {"status": "not_ready", "checks": {"config": "ok", "store": "unavailable"}, "timed_out": []}


async def test_revoking_through_the_admin_api_refuses_the_next_request(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    key = await gw.key("alice")
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": key})).status_code == 200
    admin = await gw.admin()
    async with admin:
        r = await admin.post(f"/keys/{key.split('_')[1]}/revoke")
        assert r.status_code == 200
        assert (await admin.post("/keys/nosuchkey000/revoke")).status_code == 404
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": key})).status_code == 401


async def test_metrics_count_auth_failures_by_reason_and_limits_by_name(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    await gw.client.get("/orders/1")
    await gw.client.get("/orders/1", headers={"X-API-Key": "nope"})
    text = gw.services.metrics.render().decode()
    assert 'portcullis_auth_failures_total{reason="missing_credentials"} 1.0' in text
    assert 'portcullis_auth_failures_total{reason="malformed_key"} 1.0' in text
    assert 'portcullis_requests_total{decision="auth_failed",route="orders",status="401"} 2.0' in text


async def test_keys_created_through_the_admin_api_work_and_are_shown_once(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    async with await gw.admin() as admin:
        r = await admin.post("/keys", json={"consumer": "alice", "scopes": ["orders:read"], "expires_in_s": 3600})
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert (body["consumer"], body["scopes"]) == ("alice", ["orders:read"])
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": body["key"]})).status_code == 200
    stored = await gw.services.store.get(body["key_id"])
    assert stored is not None and body["key"] not in repr(stored)  # only its HMAC is kept


@pytest.mark.parametrize("payload", [
    {"consumer": "alice\r\nX-Injected: 1"},  # would become an upstream identity header
    {"consumer": "alice", "scopes": ["orders:read\nadmin"]},
    {"consumer": "alice", "scopes": ["a b"]},
    {"consumer": ""},
    {"consumer": "x" * 65},
    {"consumer": "alice", "role": "admin"},  # unknown fields are refused, not ignored
    {"consumer": "alice", "expires_in_s": -1},
    {"scopes": []},
])
async def test_malformed_key_requests_get_a_problem_document_and_create_nothing(
    make_gateway: GatewayFactory, upstream: UpstreamServer, payload: dict[str, object]
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    async with await gw.admin() as admin:
        r = await admin.post("/keys", json=payload)
        unknown = await admin.post("/keys/nosuchkey000/revoke")
        wrong_method = await admin.delete("/keys")
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "request.malformed" and r.json()["request_id"]
    assert await gw.services.store.list() == []
    assert (unknown.status_code, unknown.json()["code"]) == (404, "admin.not_found")
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (405, "route.method_not_allowed")
