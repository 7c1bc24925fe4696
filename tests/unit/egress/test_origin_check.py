"""``OriginCheck``: phase 1's check of a route's own origin, once per TTL and one at a time.

The resolver is a fixed one that can be held (an event), to play a slow DNS answer while many
calls arrive; time is a manual clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from portcullis.egress.call.origin_check import OriginCheck
from portcullis.egress.ssrf import GuardPolicy, SsrfGuard
from portcullis.testing import ManualClock

POLICY = GuardPolicy(allow_http=True, allowed_networks=(ip_network("127.0.0.0/8"),))


class HeldResolver:
    """Answers from ``answers`` in turn (the last repeats), each once ``release`` is set."""

    def __init__(self, *answers: str) -> None:
        self.answers = [ip_address(a) for a in answers]
        self.lookups = 0
        self.release = asyncio.Event()
        self.release.set()

    async def resolve(self, host: str) -> Sequence[IPv4Address | IPv6Address]:
        self.lookups += 1
        await self.release.wait()
        return [self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]]


def check(resolver: HeldResolver, clock: ManualClock, ttl_s: float = 1.0, base: str = "http://api.partner.test") -> OriginCheck:
    return OriginCheck(base, SsrfGuard(resolver), POLICY, clock, ttl_s)


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


async def test_an_allowing_verdict_stands_for_the_ttl_and_a_refusing_one_is_never_kept() -> None:
    resolver, clock = HeldResolver("127.0.0.1", "10.0.0.7", "127.0.0.1"), ManualClock()
    origin = check(resolver, clock)
    assert [await origin.refusal() for _ in range(3)] == [None] * 3 and resolver.lookups == 1
    clock.advance(1.0)
    assert await origin.refusal() == "address_private"  # the host turned private: refused at once
    assert await origin.refusal() is None  # looked up again: not kept
    assert resolver.lookups == 3


async def test_a_base_url_the_guard_refuses_refuses_every_call_without_a_lookup() -> None:
    resolver, clock = HeldResolver("127.0.0.1"), ManualClock()
    origin = check(resolver, clock, base="http://user@api.partner.test")
    assert await origin.refusal() == "userinfo_not_allowed"
    assert resolver.lookups == 0
