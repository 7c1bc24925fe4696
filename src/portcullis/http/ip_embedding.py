"""The IPv4 address an IPv6 address carries, if any: one definition for every check that must not be
evaded by spelling an IPv4 address as IPv6.

Why shared: the SSRF guard (``egress/ssrf.py``) refuses ``::ffff:169.254.169.254`` as it refuses
``169.254.169.254``, and an address block (``controls/addresses.py``) on ``203.0.113.0/24`` must
catch ``::ffff:203.0.113.7``, ``2002:cb00:7107::`` (6to4) and ``64:ff9b::cb00:7107`` (NAT64) alike.
Pure: no I/O.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_network

__all__ = ["embedded_ipv4"]

_NAT64 = (ip_network("64:ff9b::/96"), ip_network("64:ff9b:1::/48"))
_TEREDO = ip_network("2001::/32")


def embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, 6to4, Teredo, NAT64 or IPv4-compatible address."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _TEREDO:
        teredo = address.teredo
        return teredo[1] if teredo else None
    for net in _NAT64:
        if address in net:
            return IPv4Address(int(address) & 0xFFFFFFFF)
    packed = int(address)
    if packed >> 32 == 0 and packed > 1:  # IPv4-compatible ::a.b.c.d (deprecated, still routable by some stacks)
        return IPv4Address(packed)
    return None
