"""``OriginCheck``: phase 1's SSRF check of a route's own origin, kept for a TTL, made one at a time,
refreshed in the background, and kept through a DNS outage.

Why not on every call: a route's calls all go to its base URL, so the guard's verdict on that
origin (scheme, port, host lists, and every address the host resolves to) is the same for each of
them until DNS answers otherwise. Resolving it per call put the system resolver (a thread hop, and
a network round trip with a real resolver) on every call, while the check that decides where bytes
go is made for every new connection anyway (``phase5_client``: resolve, check, then pin).

How it is kept (``egress.origin_check_ttl``, 1 s by default):
- an allowing verdict stands for the TTL; a refusing one is never kept;
- past the TTL, a call goes on the last allowing verdict and starts a fresh check in the
  background (stale-while-revalidate, as HTTP caches do): no call waits for DNS once a route has
  been checked. When the fresh check refuses (the host now resolves to a private address), the
  next calls wait for a check of their own and are refused;
- when the lookup itself fails (a DNS outage), the last allowing verdict is kept for up to
  ``MAX_STALE_S``, so calls over the connections already open (pinned to addresses checked then)
  go on; a new connection still needs its own lookup and check;
- one check at a time: calls that arrive while it runs wait for its verdict (a task of its own,
  shielded, so a caller that goes away does not cancel it for the rest), and no longer than the
  route's ``connect_timeout``: a resolver that does not answer is a failed lookup.

A TTL of 0 turns all of that off but the sharing: every call waits for a check.

The base URL is parsed once, when the route is built (``SsrfGuard.check_on``); the call's own path
is checked on every call by phase 1 (``ssrf.path_refusal``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from portcullis.clock import Clock
from portcullis.egress.ssrf import EgressTarget, GuardPolicy, SsrfGuard, UnsafeUrl, Verdict, parse_egress_url

__all__ = ["MAX_STALE_S", "OriginCheck"]

log = logging.getLogger("portcullis.egress")

MAX_STALE_S = 300.0  # how long an allowing verdict outlives a resolver that cannot answer
_LOOKUP_FAILED = "resolution_failed"


class OriginCheck:
    __slots__ = ("_clock", "_fresh_until", "_guard", "_lookup_s", "_origin", "_pending", "_policy", "_stale_until",
                 "_ttl_s")

    def __init__(self, base: str, guard: SsrfGuard, policy: GuardPolicy, clock: Clock, ttl_s: float,
                 lookup_timeout_s: float) -> None:
        """``base``: the route's base URL; ``ttl_s``: how long an allowing verdict stands;
        ``lookup_timeout_s``: the longest a check may take (the route's connect timeout)."""
        try:
            self._origin: EgressTarget | UnsafeUrl = parse_egress_url(base + "/")
        except UnsafeUrl as exc:
            self._origin = exc  # every call is refused, for this reason
        self._guard = guard
        self._policy = policy
        self._clock = clock
        self._ttl_s = ttl_s
        self._lookup_s = lookup_timeout_s
        self._fresh_until = 0.0  # monotonic: until then the last allowing verdict stands
        self._stale_until = 0.0  # until then it may still be used while a fresh check runs
        self._pending: asyncio.Task[Verdict] | None = None

    async def refusal(self) -> str | None:
        """Why the route's origin is refused now, or ``None`` when it may be called."""
        now = self._clock.monotonic()
        if now < self._fresh_until:
            return None
        if now < self._stale_until:
            self._start()  # refreshed in the background; this call goes on the last verdict
            return None
        verdict = await asyncio.shield(self._start())
        return None if verdict.allowed else verdict.reason

    async def aclose(self) -> None:
        """Stop a check still under way (the route is being closed: nobody waits for it)."""
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending

    def _start(self) -> asyncio.Task[Verdict]:
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._check())
        return self._pending

    async def _check(self) -> Verdict:
        try:
            async with asyncio.timeout(self._lookup_s):
                verdict = await self._guard.check_on(self._origin, "/", self._policy)
        except TimeoutError:
            verdict = Verdict(False, _LOOKUP_FAILED)
        except Exception:  # a resolver that fails otherwise than with OSError: a failed lookup
            log.exception("egress: the origin check failed")
            verdict = Verdict(False, _LOOKUP_FAILED)
        finally:
            self._pending = None
        now = self._clock.monotonic()
        if verdict.allowed:
            self._fresh_until = now + self._ttl_s
            self._stale_until = now + MAX_STALE_S if self._ttl_s > 0 else 0.0
        elif verdict.reason != _LOOKUP_FAILED:
            self._fresh_until = self._stale_until = 0.0  # refused: the next call waits for a check
        elif now < self._stale_until:
            self._fresh_until = now + self._ttl_s  # the resolver is down: ask it again after the TTL
        return verdict
