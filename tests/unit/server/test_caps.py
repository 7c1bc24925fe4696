"""ConnectionCaps: total and per-address counts, released on close."""

from __future__ import annotations

from portcullis.server.caps import ConnectionCaps


def test_the_per_address_cap_refuses_one_address_but_not_another() -> None:
    caps = ConnectionCaps(total=10, per_ip=2)
    assert [caps.admit("10.0.0.1") for _ in range(3)] == [None, None, "max_connections_per_ip"]
    assert caps.admit("10.0.0.2") is None


def test_the_total_cap_refuses_everyone_until_a_connection_is_released() -> None:
    caps = ConnectionCaps(total=2, per_ip=5)
    assert caps.admit("a") is None and caps.admit("b") is None
    assert caps.admit("c") == "max_connections"
    caps.release("a")
    assert caps.admit("c") is None
    assert caps.held("a") == 0


def test_exempt_addresses_count_only_towards_the_total() -> None:
    caps = ConnectionCaps(total=3, per_ip=1, exempt=lambda ip: ip == "proxy")
    assert [caps.admit("proxy") for _ in range(4)] == [None, None, None, "max_connections"]
