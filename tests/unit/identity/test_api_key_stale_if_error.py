"""Stale-if-error for API keys: what a key store outage longer than ``cache_ttl`` still lets through.

The store is a real SQLite file. ``CuttableStore`` closes it to cut it (every call then raises the
store's own ``StoreUnavailable``) and opens it again to restore it; time moves only on ``ManualClock``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from portcullis.errors import StoreUnavailable, Unauthenticated
from portcullis.identity.api_keys import ApiKeyVerifier, IssuedKey, issue_key
from portcullis.stores.sqlite import SqliteStore
from portcullis.testing import CountingKeyStore, ManualClock

PEPPER = b"p" * 40
TTL_S = 5.0
STALE_S = 300.0


class CuttableStore(CountingKeyStore):
    """A real ``SqliteStore`` that a test can close (an outage) and open again; counts ``get`` calls."""

    def __init__(self, path: Path, inner: SqliteStore) -> None:
        super().__init__(inner)
        self.path = path

    async def cut(self) -> None:
        await self.inner.aclose()

    async def restore(self) -> None:
        self.inner = await SqliteStore.connect(str(self.path))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CuttableStore]:
    path = tmp_path / "keys.db"
    s = CuttableStore(path, await SqliteStore.connect(str(path)))
    yield s
    await s.aclose()


def make_verifier(store: CuttableStore, clock: ManualClock, *, stale_s: float = STALE_S,
                  max_cache_entries: int = 10_000) -> ApiKeyVerifier:
    return ApiKeyVerifier(store, pepper=PEPPER, clock=clock, cache_ttl_s=TTL_S, stale_if_error_s=stale_s,
                          max_cache_entries=max_cache_entries)


@pytest.fixture
def verifier(store: CuttableStore, clock: ManualClock) -> ApiKeyVerifier:
    return make_verifier(store, clock)


async def new_key(store: CuttableStore, clock: ManualClock, *, expires_in_s: float | None = None) -> IssuedKey:
    issued = issue_key("acme", frozenset({"orders:read"}), pepper=PEPPER, clock=clock, expires_in_s=expires_in_s)
    await store.create(issued.record)
    return issued


async def reason(verifier: ApiKeyVerifier, key: str) -> str:
    with pytest.raises(Unauthenticated) as info:
        await verifier.verify(key)
    return info.value.reason


async def test_a_key_seen_before_keeps_working_through_an_outage_longer_than_the_ttl(
    store: CuttableStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    assert (await verifier.verify(issued.key)).served_stale is False
    await store.cut()
    clock.advance(TTL_S * 10)
    principal = await verifier.verify(issued.key)
    assert (principal.consumer_id, principal.key_id, principal.scopes) == ("acme", issued.record.key_id,
                                                                         frozenset({"orders:read"}))
    assert principal.served_stale is True


async def test_stale_use_ends_stale_if_error_after_the_last_successful_read(
    store: CuttableStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    clock.advance(100)  # before the read: the stale period counts from the read, not from creation
    await verifier.verify(issued.key)
    await store.cut()
    clock.advance(STALE_S - 1)
    assert (await verifier.verify(issued.key)).served_stale
    clock.advance(1)
    with pytest.raises(StoreUnavailable):
        await verifier.verify(issued.key)


async def test_a_stale_answer_is_trusted_for_a_ttl_before_the_store_is_asked_again(
    store: CuttableStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    await verifier.verify(issued.key)
    await store.cut()
    clock.advance(TTL_S)
    for _ in range(100):
        assert (await verifier.verify(issued.key)).served_stale
    assert store.gets == 2  # the read before the outage, one failed read, then the stale record
    clock.advance(TTL_S)
    await verifier.verify(issued.key)
    assert store.gets == 3


async def test_a_cached_stale_answer_is_marked_stale_without_io(
    store: CuttableStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    await verifier.verify(issued.key)
    await store.cut()
    clock.advance(TTL_S)
    await verifier.verify(issued.key)
    cached = verifier.verify_cached(issued.key)
    assert cached is not None and cached.served_stale


async def test_a_key_revoked_during_the_outage_is_never_served_stale(
    store: CuttableStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    await verifier.verify(issued.key)
    await store.cut()
    verifier.invalidate(issued.record.key_id)  # what a revocation heard over shared events does
    with pytest.raises(StoreUnavailable):
        await verifier.verify(issued.key)
    clock.advance(TTL_S)
    with pytest.raises(StoreUnavailable):
        await verifier.verify(issued.key)


async def test_possibly_missed_revocations_end_stale_use(
    store: CuttableStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    await verifier.verify(issued.key)
    await store.cut()
    clock.advance(TTL_S)
    await verifier.verify(issued.key)
    verifier.invalidate_all()  # the shared-events subscription came back: a revocation may have been missed
    with pytest.raises(StoreUnavailable):
        await verifier.verify(issued.key)


async def test_a_key_that_expires_during_the_outage_is_refused_as_expired(
    store: CuttableStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock, expires_in_s=60)
    await verifier.verify(issued.key)
    await store.cut()
    clock.advance(60)
    assert await reason(verifier, issued.key) == "expired"


async def test_a_wrong_secret_is_refused_against_a_stale_record(
    store: CuttableStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    await verifier.verify(issued.key)
    await store.cut()
    clock.advance(TTL_S)
    assert await reason(verifier, issued.key[:-1] + ("A" if issued.key[-1] != "A" else "B")) == "bad_secret"


async def test_an_unknown_key_still_needs_the_store(
    store: CuttableStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    await verifier.verify(issued.key)
    await store.cut()
    with pytest.raises(StoreUnavailable):
        await verifier.verify("pcl_unknownkey01_" + "a" * 43)


async def test_a_stale_period_of_zero_refuses_keys_once_their_ttl_ends(
    store: CuttableStore, clock: ManualClock
) -> None:
    verifier = make_verifier(store, clock, stale_s=0)
    issued = await new_key(store, clock)
    await verifier.verify(issued.key)
    await store.cut()
    clock.advance(TTL_S)
    with pytest.raises(StoreUnavailable):
        await verifier.verify(issued.key)


async def test_the_first_read_after_the_outage_makes_answers_fresh_again(
    store: CuttableStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    await verifier.verify(issued.key)
    await store.cut()
    clock.advance(TTL_S)
    assert (await verifier.verify(issued.key)).served_stale
    await store.restore()
    clock.advance(TTL_S)
    assert (await verifier.verify(issued.key)).served_stale is False
    await store.cut()
    clock.advance(STALE_S - 1)  # the stale period now counts from the read after the outage
    assert (await verifier.verify(issued.key)).served_stale


async def test_a_key_revoked_unheard_is_refused_as_disabled_from_its_stale_record(
    store: CuttableStore, clock: ManualClock, verifier: ApiKeyVerifier
) -> None:
    issued = await new_key(store, clock)
    await verifier.verify(issued.key)
    await store.inner.revoke(issued.record.key_id, 1.0)  # revoked where this instance heard nothing
    clock.advance(TTL_S)
    assert await reason(verifier, issued.key) == "disabled"  # the read after the TTL saw it
    await store.cut()
    clock.advance(TTL_S)
    assert await reason(verifier, issued.key) == "disabled"  # and the stale record is the disabled one


async def test_records_kept_for_stale_use_stay_within_the_cache_bound(
    store: CuttableStore, clock: ManualClock
) -> None:
    verifier = make_verifier(store, clock, max_cache_entries=3)
    keys = [await new_key(store, clock) for _ in range(5)]
    for issued in keys:
        await verifier.verify(issued.key)
    await store.cut()
    clock.advance(TTL_S)
    for issued in keys[2:]:
        assert (await verifier.verify(issued.key)).served_stale
    for issued in keys[:2]:  # evicted by the bound when the later ones were read
        with pytest.raises(StoreUnavailable):
            await verifier.verify(issued.key)
