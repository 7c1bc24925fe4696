"""Resolvers for the SSRF guard: the system's, and fixed answers for tests and the CLI.

Why a seam here: the guard's verdict depends on what a name resolves to, and tests must be able to
answer with public, private, mixed or changing addresses without DNS (and without leaving
127.0.0.1). ``portcullis egress check --resolve`` uses the same seam, as curl's ``--resolve`` does.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address

__all__ = ["StaticResolver", "SystemResolver", "parse_resolve_option"]

IpAddress = IPv4Address | IPv6Address


class SystemResolver:
    """The operating system's resolver (``getaddrinfo`` on the loop's executor): A and AAAA."""

    async def resolve(self, host: str) -> Sequence[IpAddress]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        seen: dict[IpAddress, None] = {}
        for family, _, _, _, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                seen[ip_address(str(sockaddr[0]).split("%", 1)[0])] = None
        return list(seen)


class StaticResolver:
    """Fixed answers per name; an unknown name fails like NXDOMAIN (``OSError``).

    ``answers`` may hold several answer lists per name, used in turn (the last one repeats): that
    is how a test plays a DNS-rebinding server, public first and private after.
    """

    def __init__(self, answers: Mapping[str, Sequence[Sequence[IpAddress]]]) -> None:
        self._answers = {name.lower(): [list(a) for a in lists] for name, lists in answers.items()}
        self.lookups: list[str] = []

    async def resolve(self, host: str) -> Sequence[IpAddress]:
        self.lookups.append(host)
        lists = self._answers.get(host.lower())
        if not lists:
            raise OSError(f"no answer for {host}")
        return lists.pop(0) if len(lists) > 1 else lists[0]


def parse_resolve_option(values: Sequence[str]) -> StaticResolver:
    """``HOST=IP[,IP...]`` items (repeatable) into a ``StaticResolver``. Raises ``ValueError``."""
    answers: dict[str, list[list[IpAddress]]] = {}
    for item in values:
        host, sep, ips = item.partition("=")
        if not sep or not host or not ips:
            raise ValueError(f"expected HOST=IP[,IP...], got {item!r}")
        answers.setdefault(host.lower().rstrip("."), []).append([ip_address(ip.strip()) for ip in ips.split(",")])
    return StaticResolver(answers)
