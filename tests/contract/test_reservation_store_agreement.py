"""The Redis reservation store decides exactly as the memory store, on random sequences of calls.

The memory store is the reference: fed the same reservations, settlements, releases and clock
steps, the Lua script must admit and refuse the same calls, name the same line, report the same
room and windows, and hold and charge the same amounts. Each example uses its own key prefix.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import missing_service, redis_client, redis_reachable

from portcullis.stores.base import BudgetLine, Reservation, ReservationRefused
from portcullis.stores.memory_reservations import MemoryReservationStore
from portcullis.stores.redis_reservations import RedisReservationStore

LINES = (("minute", 100, 10.0), ("lifetime", 300, None))

ops = st.lists(st.one_of(
    st.tuples(st.just("reserve"), st.integers(min_value=0, max_value=70), st.booleans()),
    st.tuples(st.just("settle"), st.integers(min_value=0, max_value=20), st.integers(min_value=0, max_value=120)),
    st.tuples(st.just("release"), st.integers(min_value=0, max_value=20), st.just(0)),
    st.tuples(st.just("advance"), st.integers(min_value=1, max_value=9000), st.just(0)),
), min_size=1, max_size=50)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
def test_redis_reserves_settles_and_expires_exactly_as_the_memory_store(sequence: list[tuple[str, int, object]]) -> None:
    if not asyncio.run(redis_reachable()):
        missing_service("Redis is not reachable on 127.0.0.1:6379")

    async def run() -> None:
        prefix = f"pcltest:{uuid.uuid4().hex}:"
        client = await redis_client()
        stores = (MemoryReservationStore(), RedisReservationStore(client, key_prefix=prefix, server_time=False))
        held: list[tuple[Reservation, Reservation]] = []
        now = 1000.0
        try:
            for op, a, b in sequence:
                if op == "advance":
                    now += a / 1000
                elif op == "reserve":
                    lines = [BudgetLine(n, f"k:{n}", limit, window, a) for n, limit, window in LINES]
                    if b:
                        lines = lines[:1]
                    mem, red = [await s.reserve(lines, now, ttl_s=5.0) for s in stores]
                    if isinstance(mem, Reservation) and isinstance(red, Reservation):
                        assert (mem.expires_at, mem.left) == (red.expires_at, red.left)
                        held.append((mem, red))
                    else:
                        assert isinstance(mem, ReservationRefused) and isinstance(red, ReservationRefused)
                        assert (red.index, red.name, red.available) == (mem.index, mem.name, mem.available)
                        assert red.reset_s == pytest.approx(mem.reset_s)
                elif held:
                    mem_r, red_r = held.pop(a % len(held))
                    if op == "settle":
                        actual = [int(str(b))] * len(mem_r.lines)
                        assert await stores[0].settle(mem_r, actual, now) == await stores[1].settle(red_r, actual, now)
                    else:
                        assert await stores[0].release(mem_r, now) == await stores[1].release(red_r, now)
                all_lines = [BudgetLine(n, f"k:{n}", limit, window, 0) for n, limit, window in LINES]
                assert await stores[0].usage(all_lines, now) == await stores[1].usage(all_lines, now)
        finally:
            keys = [k async for k in client.scan_iter(match=prefix + "*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()

    asyncio.run(run())
