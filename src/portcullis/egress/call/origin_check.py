"""``OriginCheck``: phase 1's SSRF check of a route's own origin, at most once per TTL, one at a time.

Why not on every call: a route's calls all go to its base URL, so the guard's verdict on that
origin (scheme, port, host lists, and every address the host resolves to) is the same for each of
them until DNS answers otherwise. Resolving it per call put the system resolver (a thread hop, and
a network round trip with a real resolver) on every call, while the check that decides where bytes
go is made for every new connection anyway (``phase5_client``: resolve, check, then pin). So an
allowing verdict stands for ``egress.origin_check_ttl``; a refusing one is never kept.

Why one at a time: when the verdict runs out under load, every call in flight would resolve at
once; the first starts the check and the others wait for its verdict (a task of its own, shielded,
so a caller that goes away does not cancel it for the rest).

The base URL is parsed once, when the route is built (``SsrfGuard.check_on``); the call's own path
is checked on every call by phase 1 (``ssrf.path_refusal``).
"""

from __future__ import annotations

import asyncio

from portcullis.clock import Clock
from portcullis.egress.ssrf import EgressTarget, GuardPolicy, SsrfGuard, UnsafeUrl, Verdict, parse_egress_url

__all__ = ["OriginCheck"]


class OriginCheck:
    __slots__ = ("_allowed_until", "_clock", "_guard", "_origin", "_pending", "_policy", "_ttl_s")

    def __init__(self, base: str, guard: SsrfGuard, policy: GuardPolicy, clock: Clock, ttl_s: float) -> None:
        """``base``: the route's base URL; ``ttl_s``: how long an allowing verdict stands (0: checked
        for every call that does not find a check already under way)."""
        try:
            self._origin: EgressTarget | UnsafeUrl = parse_egress_url(base + "/")
        except UnsafeUrl as exc:
            self._origin = exc  # every call is refused, for this reason
        self._guard = guard
        self._policy = policy
        self._clock = clock
        self._ttl_s = ttl_s
        self._allowed_until = 0.0  # monotonic
        self._pending: asyncio.Task[Verdict] | None = None

    async def refusal(self) -> str | None:
        """Why the route's origin is refused now, or ``None`` when it may be called."""
        if self._clock.monotonic() < self._allowed_until:
            return None
        pending = self._pending
        if pending is None:
            pending = self._pending = asyncio.ensure_future(self._check())
        verdict = await asyncio.shield(pending)
        return None if verdict.allowed else verdict.reason

    async def _check(self) -> Verdict:
        try:
            verdict = await self._guard.check_on(self._origin, "/", self._policy)
            if verdict.allowed:
                self._allowed_until = self._clock.monotonic() + self._ttl_s
            return verdict
        finally:
            self._pending = None
