"""Address blocks: every spelling of a blocked client is caught, and nothing else is.

The client address reaches the shield canonical (``http/client_ip.py``); these cases are what the
table itself must catch: IPv6 spellings that carry a blocked IPv4 address, CIDRs of both families,
blocks written in a mapped form, expiry at the instant it is due.
"""

from __future__ import annotations

import pytest

from portcullis.controls.model import Block, BlockKind, normalise_subject
from portcullis.controls.snapshot import ControlSnapshot
from portcullis.errors import InvalidControl


def block(subject: str, *, block_id: str = "blk_1", expires_at: float | None = None) -> Block:
    return Block(block_id, BlockKind.ADDRESS, normalise_subject(BlockKind.ADDRESS, subject), "attack", 0.0,
                 "token:t", expires_at)


@pytest.mark.parametrize(("blocked", "client"), [
    ("203.0.113.7", "203.0.113.7"),
    ("203.0.113.0/24", "203.0.113.200"),
    ("203.0.113.0/24", "::ffff:203.0.113.9"),  # IPv4-mapped IPv6 (RFC 4291 section 2.5.5.2)
    ("203.0.113.0/24", "::ffff:cb00:7109"),  # the same, in hex
    ("203.0.113.0/24", "2002:cb00:7109::1"),  # 6to4 (RFC 3056) embedding 203.0.113.9
    ("203.0.113.0/24", "64:ff9b::cb00:7109"),  # NAT64 well-known prefix (RFC 6052)
    ("::ffff:203.0.113.0/120", "203.0.113.9"),  # a block written in the mapped form
    ("2001:db8::/32", "2001:db8:dead:beef::1"),
    ("2001:db8::/32", "2001:0DB8:0000::0001"),  # uncompressed, upper case
    ("0.0.0.0/0", "198.51.100.1"),  # everything (a gateway under attack from everywhere)
], ids=["ipv4-exact", "ipv4-cidr", "ipv4-mapped-ipv6", "ipv4-mapped-hex", "6to4", "nat64", "mapped-block",
        "ipv6-cidr", "ipv6-long-spelling", "all-ipv4"])
def test_a_blocked_client_is_caught_in_any_spelling(blocked: str, client: str) -> None:
    snapshot = ControlSnapshot([block(blocked)])
    found = snapshot.address_block(client, 10.0)
    assert found is not None and found.block_id == "blk_1"


@pytest.mark.parametrize(("blocked", "client"), [
    ("203.0.113.0/24", "203.0.114.1"),
    ("203.0.113.0/24", "2001:db8::cb00:7109"),  # not an embedding: an ordinary IPv6 address
    ("2001:db8::/32", "2001:db9::1"),
    ("203.0.113.7", "not an address"),
], ids=["neighbour-network", "ipv6-ending-alike", "ipv6-neighbour", "garbage"])
def test_other_clients_pass(blocked: str, client: str) -> None:
    assert ControlSnapshot([block(blocked)]).address_block(client, 10.0) is None


def test_an_address_block_stops_at_its_expiry_without_any_event() -> None:
    snapshot = ControlSnapshot([block("203.0.113.0/24", expires_at=100.0)])
    assert snapshot.address_block("203.0.113.1", 99.999) is not None
    assert snapshot.address_block("203.0.113.1", 100.0) is None


def test_an_expired_block_does_not_hide_another_in_force_on_the_same_network() -> None:
    snapshot = ControlSnapshot([block("203.0.113.0/24", block_id="blk_old", expires_at=50.0),
                                block("203.0.113.0/24", block_id="blk_new")])
    found = snapshot.address_block("203.0.113.1", 60.0)
    assert found is not None and found.block_id == "blk_new"


def test_the_narrowest_or_widest_block_both_match_a_client_in_both() -> None:
    snapshot = ControlSnapshot([block("10.0.0.0/8", block_id="blk_wide"), block("10.1.2.3", block_id="blk_one")])
    found = snapshot.address_block("10.1.2.3", 0.0)
    assert found is not None and found.block_id in {"blk_wide", "blk_one"}
    assert snapshot.address_block("10.9.9.9", 0.0) is not None


@pytest.mark.parametrize("subject", ["10.0.0.300", "fe80::1%eth0", "example.com", "", "10.0.0.0/33"],
                         ids=["bad-octet", "zone-id", "hostname", "empty", "bad-prefix"])
def test_an_address_block_must_name_an_address_or_cidr(subject: str) -> None:
    with pytest.raises(InvalidControl, match="subject"):
        normalise_subject(BlockKind.ADDRESS, subject)


def test_host_bits_are_cleared_so_one_network_has_one_spelling() -> None:
    assert normalise_subject(BlockKind.ADDRESS, "203.0.113.77/24") == "203.0.113.0/24"
    assert normalise_subject(BlockKind.ADDRESS, "::ffff:203.0.113.7") == "203.0.113.7/32"
