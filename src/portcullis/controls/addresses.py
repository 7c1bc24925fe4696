"""Address blocks as a table the shield can test per request in a few dict lookups.

Why not ``any(address in net for net in blocks)``: that is one comparison per block, and an incident
can mean thousands of blocked networks at 5,000 requests per second. Here each network is stored as
its masked integer in a set per prefix length, so a test costs one lookup per distinct prefix length
in use (at most 33 for IPv4, 129 for IPv6; in practice a handful), whatever the number of blocks.
Parsing the address text costs more than all the lookups (``ipaddress`` takes microseconds), so
parsed addresses are kept in a bounded dict per table (cleared when full: an attacker with many
addresses costs a re-parse, never memory).

Spellings: the client address arrives canonical from ``http/client_ip.py`` (X-Forwarded-For only from
trusted proxies, IPv4-mapped IPv6 already turned into IPv4), and an IPv6 address that embeds an
IPv4 one (mapped, 6to4, Teredo, NAT64, compatible; ``http/ip_embedding.py``) is tested against the
IPv4 blocks as well, so no spelling of a blocked IPv4 client gets through.
Pure: no I/O; ``now`` is an argument.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from portcullis.controls.model import Block
from portcullis.http.ip_embedding import embedded_ipv4

__all__ = ["AddressBlocks"]

_Table = dict[int, dict[int, tuple[Block, ...]]]  # prefix length -> masked address -> blocks
_Parsed = tuple[int | None, int | None]  # (the IPv6 address, the IPv4 address: its own or the one embedded)
_MAX_PARSED = 65_536


class AddressBlocks:
    """Blocked networks by family and prefix length."""

    __slots__ = ("_parsed", "_v4", "_v6", "empty")

    def __init__(self, blocks: Iterable[Block]) -> None:
        v4: _Table = {}
        v6: _Table = {}
        for block in blocks:
            network = ipaddress.ip_network(block.subject, strict=False)
            table, bits = (v4, 32) if network.version == 4 else (v6, 128)
            shift = bits - network.prefixlen
            key = int(network.network_address) >> shift
            by_key = table.setdefault(network.prefixlen, {})
            by_key[key] = (*by_key.get(key, ()), block)
        self._v4 = tuple((32 - length, entries) for length, entries in sorted(v4.items()))
        self._v6 = tuple((128 - length, entries) for length, entries in sorted(v6.items()))
        self.empty = not (v4 or v6)
        self._parsed: dict[str, _Parsed] = {}

    def match(self, address: str, now: float) -> Block | None:
        """The first block in force at ``now`` covering ``address`` (text), or None. An address that
        does not parse matches nothing (the resolver never produces one)."""
        if self.empty:
            return None
        parsed = self._parsed.get(address)
        if parsed is None:
            parsed = _parse(address)
            if len(self._parsed) >= _MAX_PARSED:
                self._parsed.clear()
            self._parsed[address] = parsed
        v6, v4 = parsed
        found = _lookup(self._v6, v6, now) if v6 is not None else None
        if found is None and v4 is not None:
            found = _lookup(self._v4, v4, now)
        return found


def _parse(address: str) -> _Parsed:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return None, None
    if isinstance(parsed, ipaddress.IPv4Address):
        return None, int(parsed)
    inner = embedded_ipv4(parsed)
    return int(parsed), None if inner is None else int(inner)


def _lookup(table: tuple[tuple[int, dict[int, tuple[Block, ...]]], ...], value: int, now: float) -> Block | None:
    for shift, entries in table:
        blocks = entries.get(value >> shift)
        if blocks is not None:
            for block in blocks:
                if block.applies(now):
                    return block
    return None
