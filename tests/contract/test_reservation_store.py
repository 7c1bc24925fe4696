"""The reservation store contract, run on the memory store and on the real Redis.

The claim under test is **zero overshoot**: however many reservations race, what is admitted
(held plus charged) never passes a line's limit, and settling gives back what a call did not use.
Same scenarios, same manual clock, same answers on both backends; Redis tests use their own key
prefix and delete it, and under ``CI=true`` an unreachable Redis fails the run.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from redis.asyncio import Redis

from portcullis.stores.base import BudgetLine, Reservation, ReservationRefused, ReservationStore
from portcullis.stores.memory_reservations import MemoryReservationStore
from portcullis.stores.redis_reservations import RedisReservationStore
from portcullis.testing import ManualClock

TTL = 600.0


def line(name: str = "tokens", *, limit: int = 1000, amount: int = 10, window_s: float | None = 60.0,
         key: str | None = None) -> BudgetLine:
    return BudgetLine(name, key or f"k:{name}", limit, window_s, amount)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> ReservationStore:
    if request.param == "memory":
        return MemoryReservationStore()
    client, prefix = request.getfixturevalue("redis_space")
    return RedisReservationStore(client, key_prefix=prefix, server_time=False)


async def reserve(store: ReservationStore, clock: ManualClock, *lines: BudgetLine) -> Reservation:
    held = await store.reserve(lines, clock.monotonic(), ttl_s=TTL)
    assert isinstance(held, Reservation), held
    return held


async def test_a_reservation_fits_only_while_used_plus_reserved_plus_amount_is_within_the_limit(
        store: ReservationStore) -> None:
    clock = ManualClock()
    await reserve(store, clock, line(amount=600))
    refused = await store.reserve([line(amount=401)], clock.monotonic(), ttl_s=TTL)
    assert refused == ReservationRefused(0, "tokens", 400, pytest.approx(60.0))
    assert isinstance(await store.reserve([line(amount=400)], clock.monotonic(), ttl_s=TTL), Reservation)


async def test_a_refusal_holds_nothing_on_any_line(store: ReservationStore) -> None:
    clock = ManualClock()
    wide, narrow = line("wide", limit=1000, amount=50), line("narrow", limit=40, amount=50)
    refused = await store.reserve([wide, narrow], clock.monotonic(), ttl_s=TTL)
    assert isinstance(refused, ReservationRefused) and (refused.index, refused.name) == (1, "narrow")
    usage = await store.usage([wide, narrow], clock.monotonic())
    assert [(u.used, u.reserved) for u in usage] == [(0, 0), (0, 0)]


async def test_settling_below_the_reservation_releases_the_rest(store: ReservationStore) -> None:
    clock = ManualClock()
    tokens = line(limit=100, amount=80)
    held = await reserve(store, clock, tokens)
    settled = await store.settle(held, [30], clock.monotonic())
    assert settled.charged == (30,) and not settled.expired and settled.over(held) == (0,)
    [usage] = await store.usage([tokens], clock.monotonic())
    assert (usage.used, usage.reserved) == (30, 0)
    assert isinstance(await store.reserve([line(limit=100, amount=70)], clock.monotonic(), ttl_s=TTL), Reservation)


async def test_settling_above_the_reservation_charges_the_actual_and_the_line_refuses_until_it_resets(
        store: ReservationStore) -> None:
    clock = ManualClock()
    tokens = line(limit=100, amount=80)
    held = await reserve(store, clock, tokens)
    settled = await store.settle(held, [130], clock.monotonic())
    assert settled.charged == (130,) and settled.over(held) == (50,)
    refused = await store.reserve([line(limit=100, amount=0)], clock.monotonic(), ttl_s=TTL)
    assert isinstance(refused, ReservationRefused) and refused.available == 0
    clock.advance(60)
    assert isinstance(await store.reserve([line(limit=100, amount=100)], clock.monotonic(), ttl_s=TTL), Reservation)


async def test_every_step_answers_what_is_left_of_each_line_as_a_read_would(store: ReservationStore) -> None:
    clock = ManualClock()
    tokens, cost = line("tokens", limit=1000, amount=300), line("cost", limit=50, amount=20, window_s=None)
    first = await reserve(store, clock, tokens, cost)
    assert first.left == (700, 30)
    second = await reserve(store, clock, tokens, cost)
    assert second.left == (400, 10)
    settled = await store.settle(first, [120, 5], clock.monotonic())
    assert settled.left == (580, 25)  # the first call's usage charged, the second's hold still in
    assert await store.release(second, clock.monotonic()) == (880, 45)
    usage = await store.usage([tokens, cost], clock.monotonic())
    assert [t.limit - u.used - u.reserved for t, u in zip((tokens, cost), usage, strict=True)] == [880, 45]


async def test_what_is_left_never_reads_below_zero_after_an_overspend(store: ReservationStore) -> None:
    clock = ManualClock()
    held = await reserve(store, clock, line(limit=100, amount=80))
    assert (await store.settle(held, [130], clock.monotonic())).left == (0,)


async def test_a_release_charges_nothing(store: ReservationStore) -> None:
    clock = ManualClock()
    tokens = line(limit=100, amount=100)
    held = await reserve(store, clock, tokens)
    await store.release(held, clock.monotonic())
    [usage] = await store.usage([tokens], clock.monotonic())
    assert (usage.used, usage.reserved) == (0, 0)


async def test_an_abandoned_reservation_stops_holding_at_its_expiry(store: ReservationStore) -> None:
    clock = ManualClock()
    tokens = line(limit=100, amount=100, window_s=None)
    held = await reserve(store, clock, tokens)
    assert held.expires_at == pytest.approx(clock.monotonic() + TTL)
    clock.advance(TTL - 1)
    assert isinstance(await store.reserve([tokens], clock.monotonic(), ttl_s=TTL), ReservationRefused)
    clock.advance(1)
    again = await reserve(store, clock, tokens)  # the crashed caller's hold is gone
    late = await store.settle(held, [40], clock.monotonic())  # the first caller comes back after all
    assert late.expired and late.charged == (40,)
    [usage] = await store.usage([tokens], clock.monotonic())
    assert (usage.used, usage.reserved) == (40, 100)
    await store.release(again, clock.monotonic())


async def test_windows_reset_and_lifetime_totals_do_not(store: ReservationStore) -> None:
    clock = ManualClock()
    minute, lifetime = line("per_minute", limit=50, amount=50), line("lifetime", limit=80, amount=50, window_s=None)
    held = await reserve(store, clock, minute, lifetime)
    await store.settle(held, [50, 50], clock.monotonic())
    clock.advance(61)
    refused = await store.reserve([line("per_minute", limit=50, amount=40),
                                   line("lifetime", limit=80, amount=40, window_s=None)], clock.monotonic(), ttl_s=TTL)
    assert isinstance(refused, ReservationRefused) and refused.name == "lifetime" and refused.reset_s is None
    usage = await store.usage([minute, lifetime], clock.monotonic())
    assert [u.used for u in usage] == [0, 50]


async def test_a_settlement_after_the_window_ended_counts_in_the_new_window(store: ReservationStore) -> None:
    clock = ManualClock()
    minute = line(limit=100, amount=100)
    held = await reserve(store, clock, minute)
    clock.advance(90)  # the window the reservation was made in ended; the hold still counts
    assert isinstance(await store.reserve([line(limit=100, amount=1)], clock.monotonic(), ttl_s=TTL),
                      ReservationRefused)
    await store.settle(held, [70], clock.monotonic())
    [usage] = await store.usage([minute], clock.monotonic())
    assert (usage.used, usage.reserved) == (70, 0)


async def test_a_reset_forgets_used_and_held_amounts(store: ReservationStore) -> None:
    clock = ManualClock()
    tokens = line(limit=100, amount=100)
    await reserve(store, clock, tokens)
    await store.reset([tokens.key])
    assert isinstance(await store.reserve([tokens], clock.monotonic(), ttl_s=TTL), Reservation)


# --- zero overshoot under concurrency ----------------------------------------------------------------


async def test_hundreds_of_parallel_reservations_never_admit_more_than_the_limit(store: ReservationStore) -> None:
    clock = ManualClock()
    rng = random.Random(7)
    amounts = [rng.randint(1, 60) for _ in range(400)]
    answers = await asyncio.gather(*(
        store.reserve([line("execution", limit=1000, amount=a, window_s=None),
                       line("route_per_minute", limit=5000, amount=a)], clock.monotonic(), ttl_s=TTL)
        for a in amounts))
    admitted = [a for a, answer in zip(amounts, answers, strict=True) if isinstance(answer, Reservation)]
    refused = [a for a, answer in zip(amounts, answers, strict=True) if isinstance(answer, ReservationRefused)]
    assert sum(admitted) <= 1000
    assert refused and min(refused) > 1000 - sum(admitted)  # exact: whatever was refused did not fit
    usage = await store.usage([line("execution", window_s=None)], clock.monotonic())
    assert usage[0].reserved == sum(admitted)


async def test_settling_in_parallel_releases_capacity_without_ever_overshooting(store: ReservationStore) -> None:
    """Callers reserve, settle to a random share of their reservation, and try again, all at once,
    until the budget is spent; every token charged was covered by a reservation that fitted."""
    clock = ManualClock()
    rng = random.Random(11)
    budget = line("user_tokens", limit=20_000, window_s=None)
    charged: list[int] = []
    refusals = 0

    async def caller() -> None:
        nonlocal refusals
        while True:
            amount = rng.randint(50, 400)
            held = await store.reserve([BudgetLine(budget.name, budget.key, budget.limit, None, amount)],
                                       clock.monotonic(), ttl_s=TTL)
            if isinstance(held, ReservationRefused):
                refusals += 1
                if held.available < 50:  # nothing a caller asks for can fit any more
                    return
                continue
            await asyncio.sleep(0)  # let others race while this call is "in flight"
            actual = rng.randint(0, amount)
            await store.settle(held, [actual], clock.monotonic())
            charged.append(actual)

    await asyncio.gather(*(caller() for _ in range(200)))
    [usage] = await store.usage([budget], clock.monotonic())
    assert usage.reserved == 0 and usage.used == sum(charged)
    assert sum(charged) <= budget.limit
    assert sum(charged) > budget.limit - 400  # released capacity was reused: the budget was spent, not stranded
    assert len(charged) > 100


async def test_two_redis_clients_racing_never_overshoot(redis_space: tuple[Redis, str]) -> None:
    """Two gateway instances (two clients, two connection pools) against one budget."""
    client, prefix = redis_space
    from tests.conftest import redis_client

    other: Any = await redis_client()
    try:
        stores = [RedisReservationStore(client, key_prefix=prefix, server_time=False),
                  RedisReservationStore(other, key_prefix=prefix, server_time=False)]
        answers = await asyncio.gather(*(
            stores[i % 2].reserve([line(limit=500, amount=7)], 1000.0, ttl_s=TTL) for i in range(300)))
        assert sum(isinstance(a, Reservation) for a in answers) == 500 // 7
    finally:
        await other.aclose()


async def test_redis_keys_expire_after_the_window_and_the_last_hold(redis_space: tuple[Redis, str]) -> None:
    client, prefix = redis_space
    store = RedisReservationStore(client, key_prefix=prefix)  # Redis TIME decides
    minute = line(limit=100, amount=10, window_s=60.0)
    await store.reserve([minute], 0.0, ttl_s=300.0)
    ttl_line = await client.pttl(f"{prefix}{{pclr}}:{minute.key}")
    ttl_holds = await client.pttl(f"{prefix}{{pclr}}:{minute.key}:x")
    assert 300_000 < ttl_line <= 301_000 and 300_000 < ttl_holds <= 301_000  # the hold outlives the window
    lifetime = line("lifetime", limit=100, amount=10, window_s=None)
    await store.reserve([lifetime], 0.0, ttl_s=300.0)
    assert await client.pttl(f"{prefix}{{pclr}}:{lifetime.key}") == -1  # a lifetime total is kept
