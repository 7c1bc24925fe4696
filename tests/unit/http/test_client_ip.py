"""Unit table for http/client_ip.py: the client is the rightmost untrusted hop, never a forged entry."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network

import pytest

from portcullis.http.client_ip import UNKNOWN_CLIENT, ClientAddressResolver

LB = "10.0.0.5"  # our load balancer
EDGE = "10.0.1.7"  # our CDN edge, in front of the load balancer
TRUSTED: list[IPv4Network | IPv6Network] = [ip_network("10.0.0.0/16"), ip_network("fd00::/8")]


@pytest.fixture
def resolver() -> ClientAddressResolver:
    return ClientAddressResolver(TRUSTED)


CASES = [
    # (peer, X-Forwarded-For lines, client)
    pytest.param("203.0.113.9", [], "203.0.113.9", id="direct-client"),
    # OWASP: X-Forwarded-For is client-controlled unless a trusted proxy wrote it.
    pytest.param("203.0.113.9", [b"127.0.0.1"], "203.0.113.9", id="OWASP-forged-xff-from-untrusted-peer"),
    pytest.param("203.0.113.9", [b"10.0.0.1"], "203.0.113.9", id="forged-trusted-looking-xff-from-untrusted-peer"),
    pytest.param(LB, [b"198.51.100.2"], "198.51.100.2", id="one-trusted-proxy"),
    pytest.param(LB, [f"198.51.100.2, {EDGE}".encode()], "198.51.100.2", id="two-trusted-proxies"),
    pytest.param(LB, [b"1.1.1.1, 198.51.100.2"], "198.51.100.2", id="spoofed-leftmost-entry-ignored"),
    pytest.param(LB, [b"127.0.0.1, 198.51.100.2, " + EDGE.encode()], "198.51.100.2", id="spoofed-behind-chain"),
    pytest.param(LB, [b"1.1.1.1", b"198.51.100.2"], "198.51.100.2", id="header-lines-joined-in-order"),
    pytest.param(LB, [f"10.0.3.3, {EDGE}".encode()], "10.0.3.3", id="all-trusted-gives-leftmost"),
    pytest.param(LB, [b"garbage, 198.51.100.2"], "198.51.100.2", id="garbage-left-of-client-ignored"),
    pytest.param(LB, [f"198.51.100.2, garbage, {EDGE}".encode()], EDGE, id="garbage-stops-at-last-trusted"),
    pytest.param(LB, [b"unknown"], LB, id="garbage-only-gives-peer"),
    pytest.param(LB, [b"198.51.100.2:4711"], LB, id="ipv4-with-port-is-malformed"),
    pytest.param(LB, [b"[2001:db8::1]:443"], LB, id="bracketed-ipv6-with-port-is-malformed"),
    pytest.param(LB, [b"fe80::1%eth0"], LB, id="zone-id-is-malformed"),
    pytest.param(LB, [b"[198.51.100.2]"], LB, id="brackets-around-ipv4-malformed"),
    pytest.param(LB, [b"example.com"], LB, id="hostname-is-malformed"),
    pytest.param(LB, [b"198.51.100.2,,  "], "198.51.100.2", id="empty-entries-skipped"),
    pytest.param(LB, [b""], LB, id="empty-header"),
    pytest.param(LB, [b"[2001:DB8::1]"], "2001:db8::1", id="bracketed-ipv6-normalised"),
    pytest.param(LB, [b"::ffff:198.51.100.2"], "198.51.100.2", id="ipv4-mapped-hop-normalised"),
    pytest.param("::ffff:10.0.0.5", [b"198.51.100.2"], "198.51.100.2", id="ipv4-mapped-peer-is-trusted"),
    pytest.param("::ffff:203.0.113.9", [], "203.0.113.9", id="ipv4-mapped-peer-normalised"),
    pytest.param("fd00::1", [b"2001:db8::7"], "2001:db8::7", id="ipv6-trusted-proxy"),
    pytest.param(None, [b"198.51.100.2"], UNKNOWN_CLIENT, id="no-peer"),
    pytest.param("not-an-ip", [b"198.51.100.2"], UNKNOWN_CLIENT, id="unparseable-peer"),
]


@pytest.mark.parametrize(("peer", "xff", "client"), CASES)
def test_client_address_is_rightmost_untrusted_hop(
    resolver: ClientAddressResolver, peer: str | None, xff: list[bytes], client: str
) -> None:
    assert resolver.resolve(peer, xff) == client


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert ClientAddressResolver([]).resolve("10.0.0.5", [b"198.51.100.2"]) == "10.0.0.5"


@pytest.mark.parametrize(
    ("address", "trusted"),
    [
        pytest.param("10.0.200.1", True, id="inside"),
        pytest.param("::ffff:10.0.0.1", True, id="ipv4-mapped-inside"),
        pytest.param("10.1.0.1", False, id="outside"),
        pytest.param(None, False, id="none"),
        pytest.param("nonsense", False, id="garbage"),
    ],
)
def test_is_trusted_checks_the_configured_networks(
    resolver: ClientAddressResolver, address: str | None, trusted: bool
) -> None:
    assert resolver.is_trusted(address) is trusted
