"""A blocked client cannot step around its address block by spelling its address otherwise or by
forging forwarding headers; clients that are not blocked keep getting through.

Sources: CWE-348 (use of less trusted source: X-Forwarded-For spoofing); RFC 4291 section 2.5.5.2
(IPv4-mapped IPv6: the same host on a dual-stack socket); RFC 3056 (6to4) and RFC 6052 (NAT64), the
IPv6 embeddings an IPv4 client can be seen through; OWASP API4:2023 (blocks are the incident answer
to resource abuse).
"""

from __future__ import annotations

import pytest
from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml

from portcullis.controls import BlockKind

BEHIND_PROXY = """
trusted_proxies: [127.0.0.1/32]
routes:
  - {name: open, path: "/open", upstream: api, auth: none}
"""
DIRECT = """
routes:
  - {name: open, path: "/open", upstream: api, auth: none}
"""


@pytest.mark.parametrize("forwarded", [
    pytest.param("203.0.113.9", id="plain"),
    pytest.param("::ffff:203.0.113.9", id="RFC4291-ipv4-mapped"),
    pytest.param("[::ffff:203.0.113.9]", id="RFC4291-ipv4-mapped-bracketed"),
    pytest.param("::ffff:cb00:7109", id="RFC4291-ipv4-mapped-hex"),
    pytest.param("2002:cb00:7109::1", id="RFC3056-6to4"),
    pytest.param("64:ff9b::cb00:7109", id="RFC6052-nat64"),
    pytest.param("198.51.100.1, 203.0.113.9", id="CWE-348-client-prepends-an-innocent-address"),
])
async def test_a_blocked_client_behind_a_trusted_proxy_is_refused_in_every_spelling(
    make_gateway: GatewayFactory, upstream: UpstreamServer, forwarded: str
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, BEHIND_PROXY))
    await gw.services.controls.add_block(BlockKind.ADDRESS, "203.0.113.0/24", reason="flood", actor="test")
    r = await gw.client.get("/open", headers={"X-Forwarded-For": forwarded})
    assert (r.status_code, r.json()["code"]) == (403, "access.blocked")
    assert upstream.seen == []


@pytest.mark.parametrize("header", ["X-Forwarded-For", "X-Real-IP", "Forwarded", "True-Client-IP"],
                         ids=["CWE-348-x-forwarded-for", "x-real-ip", "forwarded", "true-client-ip"])
async def test_a_forwarding_header_from_an_untrusted_peer_does_not_lift_a_block(
    make_gateway: GatewayFactory, upstream: UpstreamServer, header: str
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, DIRECT))
    await gw.services.controls.add_block(BlockKind.ADDRESS, "127.0.0.1", reason="flood", actor="test")
    value = "for=198.51.100.1" if header == "Forwarded" else "198.51.100.1"
    r = await gw.client.get("/open", headers={header: value})
    assert (r.status_code, r.json()["code"]) == (403, "access.blocked")
    assert upstream.seen == []


@pytest.mark.parametrize("forwarded", ["203.0.114.9", "2001:db8::cb00:7109", "::ffff:198.51.100.1"],
                         ids=["neighbour-network", "ipv6-that-only-ends-alike", "mapped-innocent"])
async def test_legitimate_clients_next_to_a_block_pass(
    make_gateway: GatewayFactory, upstream: UpstreamServer, forwarded: str
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, BEHIND_PROXY))
    await gw.services.controls.add_block(BlockKind.ADDRESS, "203.0.113.0/24", reason="flood", actor="test")
    assert (await gw.client.get("/open", headers={"X-Forwarded-For": forwarded})).status_code == 200
