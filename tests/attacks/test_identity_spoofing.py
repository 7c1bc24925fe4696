"""A client can never set the identity the backend trusts, nor forge its own address.

Sources: OWASP API2:2023 and API8:2023 (security misconfiguration: trusting client headers);
CWE-348 (use of less trusted source: X-Forwarded-For spoofing of IP allow-lists); the "hop-by-hop abuse" class
(Nathan Davison, 2019: naming X-Forwarded-For or auth headers in Connection to make a proxy drop them).
"""

from __future__ import annotations

import pytest
from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml

ROUTES = """
routes:
  - {name: orders, path: "/orders/{order_id}", upstream: api}
  - name: internal
    path: "/internal"
    upstream: api
    auth: none
    shield: {allow: [10.0.0.0/8]}
  - name: blocked
    path: "/blocked"
    upstream: api
    auth: none
    shield: {deny: [127.0.0.0/8]}
"""

FORGED_IDENTITY = [
    pytest.param({"X-Consumer-Id": "admin"}, id="OWASP-API2-forged-consumer-id"),
    pytest.param({"X-Consumer-Scopes": "admin:*"}, id="OWASP-API2-forged-scopes"),
    pytest.param({"X-Key-Id": "root"}, id="forged-key-id"),
    pytest.param({"X-Authenticated-Userid": "admin"}, id="kong-authenticated-userid"),
]


@pytest.mark.parametrize("forged", FORGED_IDENTITY)
async def test_forged_identity_headers_are_replaced(
    make_gateway: GatewayFactory, upstream: UpstreamServer, forged: dict[str, str]
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    key = await gw.key("alice", ("orders:read",))
    r = await gw.client.get("/orders/1", headers={"X-API-Key": key, **forged})
    assert r.status_code == 200
    seen = upstream.seen[-1]
    assert seen.all("x-consumer-id") == ["alice"]
    for name, value in forged.items():
        assert value not in seen.all(name)


@pytest.mark.parametrize("header", ["X-Forwarded-For", "X-Real-IP", "True-Client-IP", "Forwarded", "X-Client-IP"])
async def test_forged_address_headers_do_not_open_an_allow_list(
    make_gateway: GatewayFactory, upstream: UpstreamServer, header: str
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    value = "for=10.1.2.3" if header == "Forwarded" else "10.1.2.3"
    r = await gw.client.get("/internal", headers={header: value})
    assert r.status_code == 403
    assert r.json()["code"] == "access.denied"
    assert upstream.seen == []


async def test_forged_address_does_not_escape_a_deny_list(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    r = await gw.client.get("/blocked", headers={"X-Forwarded-For": "8.8.8.8"})
    assert r.status_code == 403


@pytest.mark.parametrize("named", ["X-Forwarded-For", "X-Request-Id", "X-Consumer-Id", "X-Forwarded-For, X-Consumer-Id"])
async def test_hop_by_hop_abuse_cannot_strip_headers_the_gateway_sets(
    make_gateway: GatewayFactory, upstream: UpstreamServer, named: str
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    key = await gw.key("alice")
    r = await gw.client.get("/orders/1", headers={"X-API-Key": key, "Connection": f"close, {named}"})
    assert r.status_code == 200
    seen = upstream.seen[-1]
    assert seen.all("x-forwarded-for") == ["127.0.0.1"]
    assert seen.all("x-consumer-id") == ["alice"]
    assert seen.header("x-request-id") == r.headers["x-request-id"]


async def test_allow_list_admits_a_trusted_proxys_client(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, "trusted_proxies: [127.0.0.1/32]\n" + ROUTES))
    r = await gw.client.get("/internal", headers={"X-Forwarded-For": "10.9.9.9"})
    assert r.status_code == 200
