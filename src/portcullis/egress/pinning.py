"""Resolve-then-pin for aiohttp: the connector connects only to addresses the SSRF guard checked.

Used by the OAuth 2.0 token requests (``egress/oauth2.py``); the calls themselves go through the lean
client with the same rule (``egress/call/phase5_client.py``).

Why a resolver and not a check before the request: a check that resolves the name and a client
that resolves it again can get two different answers (DNS rebinding: public for the check, private
for the connection). Plugging the guard in as aiohttp's resolver makes the checked answer the only
answer the connector ever sees; TLS still verifies the URL's host name (aiohttp sends it as SNI and
checks the certificate against it). Every redirect hop is resolved, so checked, again.
"""

from __future__ import annotations

import socket
from ipaddress import IPv6Address

from aiohttp.abc import AbstractResolver, ResolveResult

from portcullis.egress.ssrf import EgressTarget, GuardPolicy, SsrfGuard, UnsafeUrl, parse_egress_url

__all__ = ["BlockedDestination", "GuardedResolver"]


class BlockedDestination(OSError):
    """The guard refused the destination; aiohttp reports it as a connection error, never connects."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"egress destination blocked: {reason}")
        self.host = host
        self.reason = reason


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that answers only with guard-approved addresses for ``policy``."""

    def __init__(self, guard: SsrfGuard, policy: GuardPolicy, *, scheme: str = "https") -> None:
        self._guard = guard
        self._policy = policy
        self._scheme = scheme

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        target = self._target(host, port)
        verdict = await self._guard.check_target(target, self._policy)
        if not verdict.allowed:
            raise BlockedDestination(host, verdict.reason)
        results: list[ResolveResult] = []
        for address in verdict.addresses:
            fam = socket.AF_INET6 if isinstance(address, IPv6Address) else socket.AF_INET
            if family not in (socket.AF_UNSPEC, fam):
                continue
            results.append(ResolveResult(hostname=host, host=str(address), port=port, family=fam,
                                         proto=0, flags=socket.AI_NUMERICHOST))
        if not results:
            raise BlockedDestination(host, "no_address_in_family")
        return results

    async def close(self) -> None:
        return None

    def _target(self, host: str, port: int) -> EgressTarget:
        shown = f"[{host}]" if ":" in host else host
        try:
            return parse_egress_url(f"{self._scheme}://{shown}:{port}/" if port else f"{self._scheme}://{shown}/")
        except UnsafeUrl as exc:
            raise BlockedDestination(host, exc.reason) from None
