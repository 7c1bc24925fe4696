"""API keys: the format, parsing before any lookup, verification reasons, the cache and last use.

The store is a real SQLite file in ``tmp_path``; ``CountingStore`` forwards to it and counts reads.
Only time is faked (``ManualClock``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from portcullis.errors import StoreUnavailable, Unauthenticated
from portcullis.identity.api_keys import ApiKeyVerifier, IssuedKey, create_key, issue_key, parse_api_key
from portcullis.identity.principal import Principal
from portcullis.stores.sqlite import SqliteStore
from portcullis.testing import CountingKeyStore, ManualClock

PEPPER = b"unit-pepper-" + b"u" * 28
TTL_S = 30.0
SECRET = "S" * 43


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingKeyStore]:
    s = CountingKeyStore(await SqliteStore.connect(str(tmp_path / "keys.db")))
    yield s
    await s.aclose()


@pytest.fixture
def verifier(store: CountingKeyStore, clock: ManualClock) -> ApiKeyVerifier:
    return ApiKeyVerifier(store, pepper=PEPPER, clock=clock, cache_ttl_s=TTL_S)


async def new_key(store: CountingKeyStore, clock: ManualClock, *, consumer: str = "acme",
                  scopes: tuple[str, ...] = ("orders:read",), expires_in_s: float | None = None) -> IssuedKey:
    return await create_key(store, consumer, scopes, pepper=PEPPER, clock=clock, expires_in_s=expires_in_s)


async def reason(verifier: ApiKeyVerifier, presented: str) -> str:
    with pytest.raises(Unauthenticated) as info:
        await verifier.verify(presented)
    return info.value.reason


# --- format and parsing ---------------------------------------------------------------------

def test_issued_key_has_the_scanner_friendly_format(clock: ManualClock) -> None:
    issued = issue_key("acme", {"a"}, pepper=PEPPER, clock=clock)
    m = re.fullmatch(r"pcl_([a-z0-9]{12})_([A-Za-z0-9_\-]{43})", issued.key)
    assert m is not None
    assert m.group(1) == issued.record.key_id
    assert parse_api_key(issued.key) == (m.group(1), m.group(2))


def test_issued_secrets_carry_256_bits_and_never_repeat(clock: ManualClock) -> None:
    keys = [issue_key("acme", (), pepper=PEPPER, clock=clock) for _ in range(500)]
    secrets_ = {k.key.split("_", 2)[2] for k in keys}
    assert len(secrets_) == 500
    assert {len(s) for s in secrets_} == {43}  # 43 base64url characters = 258 bits of room, 256 used
    assert len({k.record.key_id for k in keys}) == 500


def test_issued_record_holds_the_hash_not_the_secret(clock: ManualClock) -> None:
    issued = issue_key("acme", ("a", "b"), pepper=PEPPER, clock=clock, expires_in_s=60)
    secret = issued.key.split("_", 2)[2]
    assert secret not in issued.record.secret_hash
    assert re.fullmatch(r"[0-9a-f]{64}", issued.record.secret_hash)
    assert issued.record.scopes == frozenset({"a", "b"})
    assert issued.record.created_at == clock.wall()
    assert issued.record.expires_at == clock.wall() + 60
    assert secret not in repr(issued)


def test_a_non_positive_lifetime_is_refused(clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="positive"):
        issue_key("acme", (), pepper=PEPPER, clock=clock, expires_in_s=0)


GOOD_ID = "abcdefgh1234"


@pytest.mark.parametrize("text", [
    "",
    "hunter2",
    f"pcl_{GOOD_ID}_{SECRET}" + "A" * 10_000,
    f"pcl_{GOOD_ID[:-1]}_{SECRET}A",
    f"PCL_{GOOD_ID}_{SECRET}",
    f"pcx_{GOOD_ID}_{SECRET}",
    f"pcl_ABCDEFGH1234_{SECRET}",
    f"pcl_abcdefgh-234_{SECRET}",
    f"pcl_{GOOD_ID}-{SECRET}",
    f"pcl_{GOOD_ID}_{SECRET[:-1]}=",
    f"pcl_{GOOD_ID}_{SECRET[:-1]}é",
    f"pcl_{GOOD_ID}_{SECRET[:-1]}\n",
    f" pcl_{GOOD_ID}_{SECRET[:-1]}",
    f"pcl_{GOOD_ID}_{SECRET[:-1]}+",
    f"pcl_{GOOD_ID}_{SECRET[:-1]}\x00",
    f"pcl_abcdefgh\uff11\uff12\uff13\uff14_{SECRET}",
], ids=[
    "empty", "short", "huge", "id-too-short", "prefix-case", "prefix-wrong", "id-uppercase", "id-dash",
    "separator", "padding", "non-ascii", "newline", "leading-space", "plus", "nul", "fullwidth-digits",
])
def test_malformed_keys_are_refused_by_the_parser(text: str) -> None:
    with pytest.raises(Unauthenticated) as info:
        parse_api_key(text)
    assert info.value.reason == "malformed_key"


# --- verification ---------------------------------------------------------------------------

async def test_a_valid_key_yields_its_principal_with_scopes(
    store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock, scopes=("orders:read", "orders:write"))
    assert await verifier.verify(issued.key) == Principal(
        consumer_id="acme", method="api_key", key_id=issued.record.key_id,
        scopes=frozenset({"orders:read", "orders:write"}),
    )


async def test_a_wrong_secret_is_bad_secret(store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier) -> None:
    issued = await new_key(store, clock)
    assert await reason(verifier, f"pcl_{issued.record.key_id}_{SECRET}") == "bad_secret"


async def test_an_unknown_id_is_unknown_key(verifier: ApiKeyVerifier) -> None:
    assert await reason(verifier, f"pcl_{GOOD_ID}_{SECRET}") == "unknown_key"


async def test_a_key_expires_at_its_lifetime(store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier) -> None:
    issued = await new_key(store, clock, expires_in_s=3600)
    clock.advance(3599)
    assert (await verifier.verify(issued.key)).consumer_id == "acme"
    clock.advance(1)
    assert await reason(verifier, issued.key) == "expired"


async def test_a_key_revoked_through_the_verifier_stops_at_once_despite_the_cache(
    store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    await verifier.verify(issued.key)  # cached now
    assert await verifier.revoke(issued.record.key_id) is True
    assert await reason(verifier, issued.key) == "disabled"


async def test_revoking_an_unknown_key_reports_false(verifier: ApiKeyVerifier) -> None:
    assert await verifier.revoke(GOOD_ID) is False


async def test_a_key_revoked_elsewhere_stops_when_the_cache_entry_ages_out(
    store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    await verifier.verify(issued.key)
    await store.revoke(issued.record.key_id, 1.0)  # e.g. the CLI, in another process
    clock.advance(TTL_S - 1)
    await verifier.verify(issued.key)
    clock.advance(1)
    assert await reason(verifier, issued.key) == "disabled"


async def test_invalidate_makes_the_next_request_read_the_store(
    store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    await verifier.verify(issued.key)
    await store.revoke(issued.record.key_id, 1.0)
    verifier.invalidate(issued.record.key_id)
    assert await reason(verifier, issued.key) == "disabled"


async def test_the_state_of_a_key_is_told_only_to_its_holder(
    store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock, expires_in_s=10)
    await verifier.revoke(issued.record.key_id)
    clock.advance(20)
    assert await reason(verifier, f"pcl_{issued.record.key_id}_{SECRET}") == "bad_secret"


async def test_store_errors_propagate_unchanged(tmp_path: Path, clock: ManualClock) -> None:
    closed = await SqliteStore.connect(str(tmp_path / "gone.db"))
    await closed.aclose()
    verifier = ApiKeyVerifier(closed, pepper=PEPPER, clock=clock, cache_ttl_s=TTL_S)
    with pytest.raises(StoreUnavailable):
        await verifier.verify(f"pcl_{GOOD_ID}_{SECRET}")


# --- cache ----------------------------------------------------------------------------------

async def test_a_valid_key_is_read_from_the_store_once_per_ttl(
    store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    for _ in range(100):
        await verifier.verify(issued.key)
    assert store.gets == 1
    clock.advance(TTL_S)
    await verifier.verify(issued.key)
    assert store.gets == 2


async def test_an_unknown_id_is_remembered_briefly(
    store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    for _ in range(1000):
        assert await reason(verifier, f"pcl_{GOOD_ID}_{SECRET}") == "unknown_key"
    assert store.gets == 1
    clock.advance(1)
    await reason(verifier, f"pcl_{GOOD_ID}_{SECRET}")
    assert store.gets == 2


async def test_a_key_created_after_a_miss_works_within_a_second(
    store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = issue_key("acme", (), pepper=PEPPER, clock=clock)
    assert await reason(verifier, issued.key) == "unknown_key"
    await store.create(issued.record)
    clock.advance(1)
    assert (await verifier.verify(issued.key)).key_id == issued.record.key_id


async def test_a_flood_of_unknown_ids_does_not_evict_real_keys(
    store: CountingKeyStore, clock: ManualClock
) -> None:
    verifier = ApiKeyVerifier(store, pepper=PEPPER, clock=clock, cache_ttl_s=TTL_S, max_cache_entries=100)
    issued = await new_key(store, clock)
    await verifier.verify(issued.key)
    for i in range(2000):
        await reason(verifier, f"pcl_{i:012d}_{SECRET}")
    reads = store.gets
    await verifier.verify(issued.key)
    assert store.gets == reads  # still cached


async def test_the_cache_is_bounded(store: CountingKeyStore, clock: ManualClock) -> None:
    verifier = ApiKeyVerifier(store, pepper=PEPPER, clock=clock, cache_ttl_s=TTL_S, max_cache_entries=3)
    keys = [await new_key(store, clock, consumer=f"c{i}") for i in range(5)]
    for k in keys:
        await verifier.verify(k.key)
    assert store.gets == 5
    await verifier.verify(keys[-1].key)  # recent: cached
    assert store.gets == 5
    await verifier.verify(keys[0].key)  # evicted: read again
    assert store.gets == 6


async def test_concurrent_misses_for_one_key_share_one_read(
    store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    principals = await asyncio.gather(*(verifier.verify(issued.key) for _ in range(50)))
    assert {p.consumer_id for p in principals} == {"acme"}
    assert store.gets == 1


async def test_a_read_that_began_before_a_revoke_is_not_cached(
    store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    store.gate = asyncio.Event()
    early = asyncio.create_task(verifier.verify(issued.key))
    while store.gets == 0:
        await asyncio.sleep(0)
    await verifier.revoke(issued.record.key_id)
    store.gate.set()
    await early  # it read the key before the revoke
    assert await reason(verifier, issued.key) == "disabled"


# --- last use -------------------------------------------------------------------------------

async def test_last_use_is_written_only_on_flush(
    store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    for _ in range(10):
        await verifier.verify(issued.key)
    used_at = clock.wall()
    assert store.touches == 0
    stored = await store.get(issued.record.key_id)
    assert stored is not None and stored.last_used_at is None
    await verifier.flush_last_used()
    assert store.touches == 1
    stored = await store.get(issued.record.key_id)
    assert stored is not None and stored.last_used_at == used_at
    await verifier.flush_last_used()
    assert store.touches == 1  # nothing new to write


async def test_failed_attempts_do_not_count_as_use(
    store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    await reason(verifier, f"pcl_{issued.record.key_id}_{SECRET}")
    await verifier.flush_last_used()
    assert store.touches == 0


async def test_last_use_survives_a_failed_flush(tmp_path: Path, clock: ManualClock) -> None:
    path = str(tmp_path / "blip.db")
    store = CountingKeyStore(await SqliteStore.connect(path))
    issued = await new_key(store, clock)
    verifier = ApiKeyVerifier(store, pepper=PEPPER, clock=clock, cache_ttl_s=TTL_S)
    await verifier.verify(issued.key)
    await store.inner.aclose()  # the database goes away
    with pytest.raises(StoreUnavailable):
        await verifier.flush_last_used()
    store.inner = await SqliteStore.connect(path)  # and comes back
    try:
        await verifier.flush_last_used()
        stored = await store.get(issued.record.key_id)
        assert stored is not None and stored.last_used_at == clock.wall()
    finally:
        await store.inner.aclose()
