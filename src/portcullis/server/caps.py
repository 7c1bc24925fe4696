"""Connection caps: how many connections this process holds in total and per peer address.

Why: every open connection costs a file descriptor and buffers. Without a cap, 1,100 idle
connections under a 1,024 descriptor limit took the whole gateway down (accept fails, upstream
dials fail). Beyond a cap the connection gets a 503 problem document and is closed at once, so
descriptors and memory stay bounded whatever a client does.

What it refuses to do: guess who is behind a proxy. The per-address cap counts socket peers;
``exempt`` (the trusted proxies, given by the composition root) are counted only in the total.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ConnectionCaps"]


class ConnectionCaps:
    """Admit or refuse a new connection; release it when it closes."""

    __slots__ = ("_by_ip", "_exempt", "_per_ip", "_total", "total")

    def __init__(self, total: int, per_ip: int, exempt: Callable[[str], bool] | None = None) -> None:
        self._total = total
        self._per_ip = per_ip
        self._exempt = exempt
        self._by_ip: dict[str, int] = {}
        self.total = 0

    def admit(self, ip: str) -> str | None:
        """Count the connection and return ``None``, or return the reason it is refused."""
        if self.total >= self._total:
            return "max_connections"
        held = self._by_ip.get(ip, 0)
        if held >= self._per_ip and not (self._exempt is not None and self._exempt(ip)):
            return "max_connections_per_ip"
        self._by_ip[ip] = held + 1
        self.total += 1
        return None

    def release(self, ip: str) -> None:
        held = self._by_ip.get(ip, 0)
        if held <= 1:
            self._by_ip.pop(ip, None)
        else:
            self._by_ip[ip] = held - 1
        self.total -= 1

    def held(self, ip: str) -> int:
        return self._by_ip.get(ip, 0)
