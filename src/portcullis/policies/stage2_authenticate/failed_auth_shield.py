"""The failed-authentication shield: a per-IP budget of failed attempts, shared by every route.

Why it is shaped like this:
- A credential the verifier already knows (a cached key record, a verified JWT) is answered
  without touching the limiter: the common case costs a dict lookup, not two counter calls.
- A credential that needs the store (or the JWKS) first *reserves* a failure and gets it back on
  success. Checking first and counting after would let parallel guesses all pass the check before
  any is counted.
- Concurrent requests from one IP with the same unknown credential share one reservation and one
  lookup (single flight). Without that, a client opening 50 connections at once with a valid key
  and a cold cache would spend 50 reservations and be refused as if it had guessed 50 times.
- An IP the limiter has refused is remembered locally until its retry time, so it is refused
  again before any verification, even for a credential that happens to be cached: otherwise a
  correct guess would answer 200 where wrong ones answer 429, and the limit would be an oracle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from portcullis.clock import Clock
from portcullis.config.types import RateWindow
from portcullis.errors import StoreUnavailable, Unauthenticated
from portcullis.identity.principal import Principal
from portcullis.limiting.limiter import LimitRule, MultiLimiter

__all__ = ["FailedAuthShield", "Limited", "Outcome", "failed_auth_rule"]

_MAX_BLOCKED = 100_000


@dataclass(frozen=True, slots=True)
class Limited:
    """The IP has spent its failed-authentication budget; retry after this many seconds."""

    retry_after_s: float


Outcome = Principal | Limited | Unauthenticated | StoreUnavailable


class FailedAuthShield:
    """``rule`` None turns the shield off (every method then just verifies)."""

    def __init__(self, rule: LimitRule | None, limiter: MultiLimiter, clock: Clock) -> None:
        self._rule = rule
        self._limiter = limiter
        self._clock = clock
        self._blocked: dict[str, float] = {}  # ip -> monotonic time its refusal ends
        self._pending: dict[tuple[str, str], asyncio.Future[Outcome]] = {}

    def blocked(self, ip: str) -> Limited | None:
        """Known to be over budget (no I/O)."""
        until = self._blocked.get(ip)
        if until is None:
            return None
        left = until - self._clock.monotonic()
        if left > 0:
            return Limited(left)
        del self._blocked[ip]
        return None

    async def failed(self, ip: str) -> Limited | None:
        """Count one failed attempt; ``Limited`` if that was over budget."""
        if self._rule is None:
            return None
        decision = await self._limiter.consume([(self._rule, ip)])
        if decision.allowed:
            return None
        return self._block(ip, decision.retry_after_s)

    async def verify(self, ip: str, credential: str, verify: Callable[[], Awaitable[Principal]]) -> Outcome:
        """Reserve a failure, verify, give the reservation back on success; one flight per (ip, credential)."""
        key = (ip, credential)
        flight = self._pending.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._reserve_and_verify(ip, verify))
            self._pending[key] = flight
            flight.add_done_callback(lambda _f: self._pending.pop(key, None))
        # shield: one cancelled request must not cancel the flight the others are waiting on
        return await asyncio.shield(flight)

    async def verify_each(self, ip: str, verify: Callable[[], Awaitable[Principal]]) -> Outcome:
        """``verify`` without sharing a flight: for credentials that are spent by their use (a signed
        request's nonce), where two identical requests must be two verifications, the second refused."""
        return await self._reserve_and_verify(ip, verify)

    async def _reserve_and_verify(self, ip: str, verify: Callable[[], Awaitable[Principal]]) -> Outcome:
        hit = [(self._rule, ip)] if self._rule is not None else []
        if hit:
            decision = await self._limiter.consume(hit)
            if not decision.allowed:
                return self._block(ip, decision.retry_after_s)
        outcome: Outcome
        try:
            outcome = await verify()
        except Unauthenticated as exc:
            return exc  # the reservation stands as the failure's count
        except StoreUnavailable as exc:
            outcome = exc  # our outage is not the client's failure
        if hit:
            await self._limiter.refund(hit)
        return outcome

    def _block(self, ip: str, retry_after_s: float) -> Limited:
        if len(self._blocked) >= _MAX_BLOCKED:
            now = self._clock.monotonic()
            self._blocked = {k: v for k, v in self._blocked.items() if v > now}
            if len(self._blocked) >= _MAX_BLOCKED:
                self._blocked.clear()  # the limiter still counts; this map only saves calls
        self._blocked[ip] = self._clock.monotonic() + retry_after_s
        return Limited(retry_after_s)


def failed_auth_rule(rate: RateWindow | None) -> LimitRule | None:
    return LimitRule(name="shield.failed_auth", windows=(rate,), burst=None) if rate else None
