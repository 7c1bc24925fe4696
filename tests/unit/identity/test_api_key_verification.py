"""API keys: the format, parsing before any lookup, verification, caching and last-use recording.

The store is a real SQLite file; ``CountingStore`` forwards to it and counts lookups.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from portcullis.errors import Unauthenticated
from portcullis.identity.api_keys import ApiKeyVerifier, IssuedKey, issue_key, parse_api_key
from portcullis.identity.principal import Principal
from portcullis.stores.sqlite import SqliteStore
from portcullis.testing import CountingKeyStore, ManualClock

PEPPER = b"p" * 40
TTL_S = 30.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "keys.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[CountingKeyStore]:
    s = CountingKeyStore(await SqliteStore.connect(str(db_path)))
    yield s
    await s.aclose()


@pytest.fixture
def verifier(store: CountingKeyStore, clock: ManualClock) -> ApiKeyVerifier:
    return ApiKeyVerifier(store, pepper=PEPPER, clock=clock, cache_ttl_s=TTL_S)


async def new_key(store: CountingKeyStore, clock: ManualClock, consumer: str = "acme",
                  expires_in_s: float | None = None) -> IssuedKey:
    issued = issue_key(consumer, frozenset({"orders:read"}), pepper=PEPPER, clock=clock, expires_in_s=expires_in_s)
    await store.create(issued.record)
    return issued


async def reason(verifier: ApiKeyVerifier, key: str) -> str:
    with pytest.raises(Unauthenticated) as info:
        await verifier.verify(key)
    return info.value.reason


# --- format -----------------------------------------------------------------------------------

def test_issued_key_has_prefix_12_char_id_and_256_bit_secret(clock: ManualClock) -> None:
    issued = issue_key("acme", frozenset(), pepper=PEPPER, clock=clock)
    m = re.fullmatch(r"pcl_([a-z0-9]{12})_([A-Za-z0-9_\-]+)", issued.key)
    assert m is not None
    assert m.group(1) == issued.record.key_id
    secret = m.group(2)
    assert len(secret) >= 43
    assert len(secret) * 6 >= 256  # base64url: 6 bits per character
    assert secret not in issued.record.secret_hash


def test_issued_keys_are_unique_across_1000_issues(clock: ManualClock) -> None:
    issued = [issue_key("acme", frozenset(), pepper=PEPPER, clock=clock) for _ in range(1000)]
    assert len({i.key for i in issued}) == 1000
    assert len({i.record.key_id for i in issued}) == 1000
    assert len({i.key.split("_", 2)[2] for i in issued}) == 1000


def test_parse_api_key_splits_id_and_secret(clock: ManualClock) -> None:
    issued = issue_key("acme", frozenset(), pepper=PEPPER, clock=clock)
    key_id, secret = parse_api_key(issued.key)
    assert key_id == issued.record.key_id
    assert issued.key == f"pcl_{key_id}_{secret}"


GOOD_ID = "abcdefgh1234"
GOOD_SECRET = "A" * 43


@pytest.mark.parametrize("text", [
    f"pck_{GOOD_ID}_{GOOD_SECRET}",
    f"PCL_{GOOD_ID}_{GOOD_SECRET}",
    f"sk_{GOOD_ID}x_{GOOD_SECRET}",
    f"pcl_{GOOD_ID[:-1]}_{GOOD_SECRET}",
    f"pcl_{GOOD_ID}_{GOOD_SECRET[:-1]}",
    f"pcl_{GOOD_ID}_{GOOD_SECRET}A",
    f"pcl_{GOOD_ID}x_{GOOD_SECRET[:-1]}",
    f"pcl_ABCDEFGH1234_{GOOD_SECRET}",
    f"pcl_abcdefgh-234_{GOOD_SECRET}",
    f"pcl_{GOOD_ID}_{GOOD_SECRET[:-1]}=",
    f"pcl_{GOOD_ID}_{GOOD_SECRET[:-1]}é",
    f"pcl_{GOOD_ID}_{GOOD_SECRET[:-1]} ",
    f"pcl__{GOOD_ID}_{GOOD_SECRET[:-1]}",
    f"pcl_abcdef_ghi12_{GOOD_SECRET[:-1]}",  # the secret itself may hold "_" (base64url)
    "",
], ids=[
    "wrong-prefix", "uppercase-prefix", "other-prefix-same-length", "short-id", "short-secret", "long-secret",
    "long-id-short-secret", "uppercase-id", "id-charset", "secret-padding", "secret-non-ascii", "secret-space",
    "extra-underscore-before-id", "underscore-inside-id", "empty",
])
def test_parse_api_key_rejects_malformed_keys(text: str) -> None:
    with pytest.raises(Unauthenticated) as info:
        parse_api_key(text)
    assert info.value.reason == "malformed_key"


# --- verify -----------------------------------------------------------------------------------

async def test_valid_key_yields_a_principal(store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier) -> None:
    issued = await new_key(store, clock)
    principal = await verifier.verify(issued.key)
    assert principal == Principal(consumer_id="acme", method="api_key", key_id=issued.record.key_id,
                                  scopes=frozenset({"orders:read"}))


async def test_wrong_secret_is_bad_secret(store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier) -> None:
    issued = await new_key(store, clock)
    assert await reason(verifier, f"pcl_{issued.record.key_id}_{GOOD_SECRET}") == "bad_secret"


async def test_unknown_id_is_unknown_key(verifier: ApiKeyVerifier) -> None:
    assert await reason(verifier, f"pcl_{GOOD_ID}_{GOOD_SECRET}") == "unknown_key"


async def test_key_is_expired_after_its_lifetime(
    store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock, expires_in_s=3600)
    await verifier.verify(issued.key)
    clock.advance(3600)
    assert await reason(verifier, issued.key) == "expired"


async def test_revoke_through_verifier_is_seen_at_once_despite_cache(
    store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    await verifier.verify(issued.key)  # the record is now cached
    assert await verifier.revoke(issued.record.key_id) is True
    assert await reason(verifier, issued.key) == "disabled"


async def test_revoke_in_store_by_another_process_is_seen_after_cache_ttl(
    store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    await verifier.verify(issued.key)
    await store.revoke(issued.record.key_id, 1.0)
    clock.advance(TTL_S - 1)
    await verifier.verify(issued.key)  # still cached: accepted until the TTL passes
    clock.advance(1)
    assert await reason(verifier, issued.key) == "disabled"


async def test_last_used_is_stored_only_on_flush(
    store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    await verifier.verify(issued.key)
    used_at = clock.wall()
    clock.advance(5)
    got = await store.get(issued.record.key_id)
    assert got is not None and got.last_used_at is None
    await verifier.flush_last_used()
    got = await store.get(issued.record.key_id)
    assert got is not None and got.last_used_at == used_at


async def test_database_file_never_contains_the_secret(db_path: Path, clock: ManualClock) -> None:
    s = CountingKeyStore(await SqliteStore.connect(str(db_path)))
    try:
        issued = await new_key(s, clock)
        v = ApiKeyVerifier(s, pepper=PEPPER, clock=clock, cache_ttl_s=TTL_S)
        await v.verify(issued.key)
        await v.flush_last_used()
    finally:
        await s.aclose()
    secret = issued.key.split("_", 2)[2].encode()

    def read_all() -> bytes:  # the database and any -wal / -shm files left beside it
        return b"".join(p.read_bytes() for p in sorted(db_path.parent.glob(db_path.name + "*")))

    raw = await asyncio.to_thread(read_all)
    assert issued.record.key_id.encode() in raw  # the file really holds the record
    assert secret not in raw
    assert issued.key.encode() not in raw


async def test_malformed_keys_cause_no_store_lookup(store: CountingKeyStore, verifier: ApiKeyVerifier) -> None:
    for i in range(10_000):
        with pytest.raises(Unauthenticated):
            await verifier.verify(f"pcl_{i}_{GOOD_SECRET}")
    assert store.gets == 0


async def test_unknown_keys_with_one_id_are_looked_up_once_until_negative_cache_expires(
    store: CountingKeyStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    for i in range(1000):
        secret = f"{i:043d}"
        assert await reason(verifier, f"pcl_{GOOD_ID}_{secret}") == "unknown_key"
    assert store.gets == 1
    clock.advance(TTL_S)
    assert await reason(verifier, f"pcl_{GOOD_ID}_{GOOD_SECRET}") == "unknown_key"
    assert store.gets == 2
