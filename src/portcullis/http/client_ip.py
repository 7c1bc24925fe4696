"""Who is the client? The socket peer, or the rightmost untrusted hop of X-Forwarded-For.

Why: per-IP limits, IP allow/deny and the audit all key on the client address, and any client can
write ``X-Forwarded-For: 127.0.0.1``. Only entries appended by proxies we trust are believed: the
list is read from the right (the end our own proxies wrote), trusted hops are skipped, and the first
untrusted address is the client (OWASP's guidance; MDN's "rightmost untrusted" rule). Entries to the
left of it were written by the client and are ignored, however plausible they look.

Rules:

- the peer is not in ``trusted_proxies`` (or the list is empty): the peer, and X-Forwarded-For is
  not looked at;
- every hop is trusted: the leftmost hop;
- a malformed entry (not a plain IP address: a port, a hostname, ``unknown``, a zone id) stops the
  walk, and the last address already believed (a trusted hop or the peer) is used, never the garbage.
  Empty entries (``a,,b``, a trailing comma) are skipped;
- IPv6 may be bracketed (``[2001:db8::1]``); IPv4-mapped IPv6 (``::ffff:192.0.2.1``) becomes IPv4,
  for the peer too, so one client is one key whichever socket family it arrived on;
- no peer (a Unix socket) or an unparseable one: ``"0.0.0.0"``, so callers always get an address
  that ``ipaddress`` accepts.

What it refuses to do: read ``X-Real-IP``, ``Forwarded``, ``True-Client-IP`` or any other header.
One header, one rule. The caller passes only the X-Forwarded-For values.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

__all__ = ["UNKNOWN_CLIENT", "ClientAddressResolver"]

UNKNOWN_CLIENT = "0.0.0.0"
"""The address reported when there is no usable socket peer (for example a Unix socket)."""

_Address = IPv4Address | IPv6Address
_MAX_CACHED_PEERS = 65_536


class ClientAddressResolver:
    """Resolves the client address from the socket peer and X-Forwarded-For. Built once per config."""

    __slots__ = ("_peers", "_v4", "_v6")

    def __init__(self, trusted_proxies: Sequence[IPv4Network | IPv6Network]) -> None:
        self._v4 = tuple(net for net in trusted_proxies if isinstance(net, IPv4Network))
        self._v6 = tuple(net for net in trusted_proxies if isinstance(net, IPv6Network))
        # peer text -> (parsed, canonical text, trusted). Peers repeat on every keep-alive request;
        # parsing with ipaddress costs more than the rest of this module. Bounded: cleared when full.
        self._peers: dict[str, tuple[_Address | None, str, bool]] = {}

    def is_trusted(self, address: str | None) -> bool:
        """Whether ``address`` (a peer or hop, as text) is inside ``trusted_proxies``."""
        return self._peer(address)[2] if address else False

    def resolve(self, peer: str | None, forwarded_for: Sequence[bytes]) -> str:
        """The client address. ``forwarded_for`` is every X-Forwarded-For line, in order."""
        if not peer:
            return UNKNOWN_CLIENT
        parsed_peer, text, trusted = self._peer(peer)
        if parsed_peer is None:
            return UNKNOWN_CLIENT
        if not forwarded_for or not trusted:
            return text
        believed = parsed_peer
        entries = b",".join(forwarded_for).split(b",")
        for raw in reversed(entries):
            entry = raw.strip()
            if not entry:
                continue
            hop = _parse_hop(entry)
            if hop is None:
                break
            believed = hop
            if not self._trusted(hop):
                break
        return str(believed)

    def _peer(self, peer: str) -> tuple[_Address | None, str, bool]:
        known = self._peers.get(peer)
        if known is None:
            parsed = _parse(peer)
            known = (parsed, str(parsed) if parsed is not None else UNKNOWN_CLIENT,
                     parsed is not None and self._trusted(parsed))
            if len(self._peers) >= _MAX_CACHED_PEERS:
                self._peers.clear()
            self._peers[peer] = known
        return known

    def _trusted(self, address: _Address) -> bool:
        networks: tuple[IPv4Network, ...] | tuple[IPv6Network, ...]
        networks = self._v4 if isinstance(address, IPv4Address) else self._v6
        return any(address in net for net in networks)


def _parse(text: str) -> _Address | None:
    if "%" in text:  # a zone id (fe80::1%eth0) is not an address another host can reach us from
        return None
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _parse_hop(entry: bytes) -> _Address | None:
    if not entry.isascii():
        return None
    text = entry.decode("ascii")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        if ":" not in text:  # brackets are for IPv6 only
            return None
    return _parse(text)
