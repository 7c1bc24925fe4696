"""The Redis counter store against the real Redis on 127.0.0.1:6379, and against the memory store.

The memory store is the reference: fed the same requests at the same (manual) times, the Redis
store's Lua script must give the same decisions, the same Retry-After and the same RateLimit
figures. Each test works under its own key prefix (``redis_space``) and deletes it afterwards.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from tests.conftest import missing_service, redis_client, redis_reachable
from tests.redis_server import PrivateRedis

from portcullis.config.types import RateWindow
from portcullis.limiting.rules import LimitDecision, LimitRule
from portcullis.stores.memory import MemoryCounterStore
from portcullis.stores.redis_counters import RedisCounterStore


def _require_redis() -> None:
    if not asyncio.run(redis_reachable()):
        missing_service("Redis is not reachable on 127.0.0.1:6379")


@pytest.fixture
def store(redis_space: tuple[Redis, str]) -> RedisCounterStore:
    client, prefix = redis_space
    return RedisCounterStore(client, key_prefix=prefix, server_time=False)


def same(a: LimitDecision, b: LimitDecision) -> None:
    assert (a.allowed, a.violated) == (b.allowed, b.violated)
    assert a.retry_after_s == pytest.approx(b.retry_after_s, abs=1e-9)
    assert [(q.name, q.limit, q.window_s, q.remaining) for q in a.quota] == \
        [(q.name, q.limit, q.window_s, q.remaining) for q in b.quota]
    assert [q.reset_s for q in a.quota] == pytest.approx([q.reset_s for q in b.quota], abs=1e-9)


KEY = LimitRule(name="per-key", windows=[RateWindow(3, 1.0), RateWindow(10, 60.0), RateWindow(100, 3600.0)])
IP = LimitRule(name="per-ip", windows=[RateWindow(5, 1.0)], burst=2)


async def test_a_decision_spans_every_window_of_every_rule_all_or_nothing(store: RedisCounterStore) -> None:
    now = 1_700_000_000.0
    hits = [(KEY, "alice"), (IP, "10.0.0.1")]
    decisions = [await store.apply(hits, now, 1, commit=True) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]  # the IP rule's burst of 2 ends it
    assert decisions[2].violated == "per-ip"
    # the refused request spent nothing from the per-key rule: alice alone still has 1 of 3 this second
    alone = await store.apply([(KEY, "alice")], now, 1, commit=True)
    assert alone.allowed and alone.quota[0].remaining == 0


async def test_peek_spends_nothing_and_refund_gives_back(store: RedisCounterStore) -> None:
    now = 1_700_000_000.0
    for _ in range(3):
        assert (await store.apply([(KEY, "bob")], now, 1, commit=False)).allowed
    assert (await store.apply([(KEY, "bob")], now, 3, commit=True)).allowed
    assert not (await store.apply([(KEY, "bob")], now, 1, commit=True)).allowed
    await store.refund([(KEY, "bob")], now, 1)
    assert (await store.apply([(KEY, "bob")], now, 1, commit=True)).allowed


async def test_server_time_is_used_when_asked(redis_space: tuple[Redis, str]) -> None:
    client, prefix = redis_space
    server = RedisCounterStore(client, key_prefix=prefix)  # Redis TIME decides
    rule = LimitRule(name="srv", windows=[RateWindow(2, 60.0)])
    results = [(await server.apply([(rule, "x")], 0.0, 1, commit=True)).allowed for _ in range(3)]
    assert results == [True, True, False]  # a nonsense client time (0.0) is ignored


steps = st.lists(
    st.tuples(st.integers(min_value=0, max_value=2500), st.integers(min_value=1, max_value=3),
              st.sampled_from(["a", "b"]), st.booleans()),
    min_size=1, max_size=60,
)
rules = st.builds(
    lambda l1, w1, l2, w2, burst: LimitRule(
        name="r", windows=[RateWindow(l1, float(w1)), RateWindow(l2, float(w2))], burst=burst),
    st.integers(min_value=1, max_value=8), st.sampled_from([1, 2, 10, 60]),
    st.integers(min_value=5, max_value=40), st.sampled_from([120, 3600]),
    st.one_of(st.none(), st.integers(min_value=1, max_value=10)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rules, steps)
def test_redis_decides_exactly_as_the_memory_store(rule: LimitRule, sequence: list[tuple[int, int, str, bool]]) -> None:
    _require_redis()

    async def run() -> None:
        prefix = f"pcltest:{uuid.uuid4().hex}:"
        client = await redis_client()
        redis_store = RedisCounterStore(client, key_prefix=prefix, server_time=False)
        memory = MemoryCounterStore()
        shared = LimitRule(name="shared", windows=[RateWindow(6, 2.0)])
        now = 1_700_000_000.0
        try:
            for step_ms, cost, subject, commit in sequence:
                now += step_ms / 1000
                hits = [(rule, subject), (shared, "all")]
                same(await redis_store.apply(hits, now, cost, commit=commit),
                     memory.apply_now(hits, now, cost, commit=commit))
        finally:
            keys = [k async for k in client.scan_iter(match=prefix + "*")]
            if keys:
                await client.delete(*keys)
            await redis_store.aclose()

    asyncio.run(run())


async def test_concurrent_decisions_share_round_trips_and_stay_exact(store: RedisCounterStore) -> None:
    rule = LimitRule(name="burst", windows=[RateWindow(10, 60.0)])
    now = 1_700_000_000.0
    decisions = await asyncio.gather(*(store.apply([(rule, "alice")], now, 1, commit=True) for _ in range(50)))
    assert [d.allowed for d in decisions].count(True) == 10  # each script still runs atomically
    assert store._apply.batches < 10  # 50 decisions in a few pipelines, not 50 round trips


async def test_a_flushed_script_cache_is_reloaded_transparently(private_redis: PrivateRedis) -> None:
    client = await asyncio.to_thread(lambda: Redis(host="127.0.0.1", port=private_redis.port))
    try:
        own = RedisCounterStore(client, key_prefix=f"pcltest:{uuid.uuid4().hex}:", server_time=False)
        rule = LimitRule(name="flush", windows=[RateWindow(5, 60.0)])
        now = 1_700_000_000.0
        assert (await own.apply([(rule, "a")], now, 1, commit=True)).allowed
        await client.script_flush()  # what a Redis restart or failover does to loaded scripts
        answers = await asyncio.gather(*(own.apply([(rule, "a")], now, 1, commit=True) for _ in range(6)))
        assert [d.allowed for d in answers].count(True) == 4  # NOSCRIPT reloaded, nothing lost or doubled
    finally:
        await client.aclose()
