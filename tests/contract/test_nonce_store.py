"""The ``NonceStore`` contract on memory and Redis, and the failover's outage rule.

Each Redis test works under its own key prefix (``redis_space``); the outage tests point at a port
nothing listens on.
"""

from __future__ import annotations

from typing import Any

import pytest

from portcullis.errors import StoreUnavailable
from portcullis.stores.base import NonceStore
from portcullis.stores.failover import Outage
from portcullis.stores.nonces import FailoverNonceStore, MemoryNonceStore, RedisNonceStore
from portcullis.stores.shared_state import build_redis_client
from portcullis.testing import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def claims_once(nonces: NonceStore) -> None:
    """The contract every backend keeps: a nonce is claimed once, per key id."""
    assert await nonces.claim("sig_aaaaaaaaaaaa:n1", 60)
    assert not await nonces.claim("sig_aaaaaaaaaaaa:n1", 60)
    assert await nonces.claim("sig_aaaaaaaaaaaa:n2", 60)
    assert await nonces.claim("sig_bbbbbbbbbbbb:n1", 60)


async def test_a_memory_nonce_is_claimed_once(clock: ManualClock) -> None:
    await claims_once(MemoryNonceStore(clock))


async def test_a_redis_nonce_is_claimed_once(redis_space: tuple[Any, str]) -> None:
    client, prefix = redis_space
    await claims_once(RedisNonceStore(client, key_prefix=prefix))


async def test_a_memory_nonce_is_forgotten_after_its_ttl(clock: ManualClock) -> None:
    store = MemoryNonceStore(clock)
    assert await store.claim("k", 10)
    clock.advance(9.9)
    assert not await store.claim("k", 10)
    clock.advance(0.1)
    assert await store.claim("k", 10)


async def test_a_full_memory_store_refuses_rather_than_forget_a_live_nonce(clock: ManualClock) -> None:
    store = MemoryNonceStore(clock, max_entries=2)
    assert await store.claim("a", 10) and await store.claim("b", 10)
    with pytest.raises(StoreUnavailable):
        await store.claim("c", 10)
    assert not await store.claim("a", 10)
    clock.advance(10)
    assert await store.claim("c", 10)  # expired ones make room


async def test_a_redis_nonce_carries_its_ttl(redis_space: tuple[Any, str]) -> None:
    client, prefix = redis_space
    assert await RedisNonceStore(client, key_prefix=prefix).claim("k", 30)
    assert 29_000 < await client.pttl(prefix + "nonce:k") <= 30_000


@pytest.mark.parametrize("on_failure", ["open", "closed"])
async def test_with_redis_down_the_failover_follows_on_failure(clock: ManualClock, on_failure: str) -> None:
    client = await build_redis_client("redis://127.0.0.1:1/0", timeout_s=0.5)
    outage = Outage(clock)
    store = FailoverNonceStore(RedisNonceStore(client, key_prefix="x:"), MemoryNonceStore(clock), outage,
                               on_failure="open" if on_failure == "open" else "closed")
    try:
        if on_failure == "closed":
            with pytest.raises(StoreUnavailable):
                await store.claim("k", 10)
        else:
            assert await store.claim("k", 10)
            assert not await store.claim("k", 10)  # remembered locally during the outage
        assert outage.degraded
    finally:
        await client.aclose()
