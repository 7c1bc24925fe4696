"""``OriginCheck``: phase 1's check of a route's own origin, kept for a TTL, made one at a time,
refreshed in the background, kept through a DNS outage.

The resolver is a fixed one that can be held (an event) to play a slow DNS answer while calls
arrive, or fail to play an outage; time is a manual clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from portcullis.egress.call.origin_check import MAX_STALE_S, OriginCheck
from portcullis.egress.ssrf import GuardPolicy, SsrfGuard
from portcullis.testing import ManualClock

POLICY = GuardPolicy(allow_http=True, allowed_networks=(ip_network("127.0.0.0/8"),))


class HeldResolver:
    """Answers from ``answers`` in turn (the last repeats; ``"down"`` fails as NXDOMAIN does), each
    once ``release`` is set."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.lookups = 0
        self.release = asyncio.Event()
        self.release.set()

    async def resolve(self, host: str) -> Sequence[IPv4Address | IPv6Address]:
        self.lookups += 1
        await self.release.wait()
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer == "down":
            raise OSError("no answer")
        return [ip_address(answer)]


def check(resolver: HeldResolver, clock: ManualClock, ttl_s: float = 1.0,
          base: str = "http://api.partner.test", lookup_timeout_s: float = 30.0) -> OriginCheck:
    return OriginCheck(base, SsrfGuard(resolver), POLICY, clock, ttl_s, lookup_timeout_s=lookup_timeout_s)


async def settle() -> None:
    for _ in range(5):  # let a background check run to its end
        await asyncio.sleep(0)


async def test_many_calls_arriving_while_the_host_is_looked_up_share_one_lookup() -> None:
    resolver, clock = HeldResolver("127.0.0.1"), ManualClock()
    origin = check(resolver, clock)
    resolver.release.clear()
    waiting = [asyncio.create_task(origin.refusal()) for _ in range(20)]
    await asyncio.sleep(0)
    resolver.release.set()
    assert await asyncio.gather(*waiting) == [None] * 20
    assert resolver.lookups == 1


async def test_a_caller_that_goes_away_does_not_cancel_the_check_for_the_others() -> None:
    resolver, clock = HeldResolver("127.0.0.1"), ManualClock()
    origin = check(resolver, clock)
    resolver.release.clear()
    first = asyncio.create_task(origin.refusal())
    second = asyncio.create_task(origin.refusal())
    await asyncio.sleep(0)
    first.cancel()
    resolver.release.set()
    assert await second is None
    assert resolver.lookups == 1


async def test_within_the_ttl_no_call_looks_the_host_up() -> None:
    resolver, clock = HeldResolver("127.0.0.1"), ManualClock()
    origin = check(resolver, clock)
    assert [await origin.refusal() for _ in range(3)] == [None] * 3
    clock.advance(0.9)
    assert await origin.refusal() is None
    assert resolver.lookups == 1


async def test_past_the_ttl_a_call_does_not_wait_for_dns_and_a_host_turned_private_is_refused_next() -> None:
    resolver, clock = HeldResolver("127.0.0.1", "10.0.0.7"), ManualClock()
    origin = check(resolver, clock)
    assert await origin.refusal() is None
    clock.advance(1.0)
    resolver.release.clear()  # DNS is slow now: the call goes on the last verdict at once
    assert await asyncio.wait_for(origin.refusal(), timeout=5) is None
    resolver.release.set()
    await settle()
    assert await origin.refusal() == "address_private"
    assert resolver.lookups == 3  # the first check, the background one, and the refused call's own


async def test_through_a_dns_outage_the_last_verdict_stands_for_max_stale_then_calls_are_refused() -> None:
    resolver, clock = HeldResolver("127.0.0.1", "down"), ManualClock()
    origin = check(resolver, clock)
    assert await origin.refusal() is None
    for _ in range(10):  # ten TTLs of outage: one lookup each, every call allowed
        clock.advance(1.0)
        assert await origin.refusal() is None
        await settle()
        assert await origin.refusal() is None  # within the TTL after the failed lookup: no new one
    assert resolver.lookups == 11
    clock.advance(MAX_STALE_S)
    assert await origin.refusal() == "resolution_failed"


async def test_a_ttl_of_zero_makes_every_call_wait_for_its_check() -> None:
    resolver, clock = HeldResolver("127.0.0.1", "10.0.0.7"), ManualClock()
    origin = check(resolver, clock, ttl_s=0.0)
    assert await origin.refusal() is None
    assert await origin.refusal() == "address_private"
    assert resolver.lookups == 2


async def test_a_base_url_the_guard_refuses_refuses_every_call_without_a_lookup() -> None:
    resolver, clock = HeldResolver("127.0.0.1"), ManualClock()
    origin = check(resolver, clock, base="http://user@api.partner.test")
    assert await origin.refusal() == "userinfo_not_allowed"
    assert resolver.lookups == 0


async def test_closing_stops_a_check_under_way() -> None:
    resolver, clock = HeldResolver("127.0.0.1"), ManualClock()
    origin = check(resolver, clock)
    assert await origin.refusal() is None
    clock.advance(1.0)
    resolver.release.clear()
    assert await origin.refusal() is None  # went on the last verdict; a refresh is under way
    await asyncio.sleep(0)  # the refresh asks the (held) resolver
    await origin.aclose()
    assert origin._pending is None and resolver.lookups == 2


async def test_a_resolver_that_never_answers_is_a_failed_lookup_within_the_timeout() -> None:
    resolver, clock = HeldResolver("127.0.0.1"), ManualClock()
    origin = check(resolver, clock, lookup_timeout_s=0.01)
    resolver.release.clear()  # never set: the lookup never comes back
    assert await asyncio.wait_for(origin.refusal(), timeout=10) == "resolution_failed"
