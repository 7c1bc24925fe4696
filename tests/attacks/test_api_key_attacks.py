"""Attacks on API keys: guessing, junk floods, leaked database rows, timing, crossed and revoked keys.

Sources, named in each case's id: OWASP API Security Top 10 2023 API2 (broken authentication) and
API4 (unrestricted resource consumption); CWE-208 (observable timing discrepancy), CWE-256
(plaintext storage of a credential), CWE-916 (hash without sufficient effort: a bare, unkeyed
digest), CWE-613 (insufficient session expiration), CWE-89 (SQL injection). Every test ends by
checking that the legitimate key still works.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import string
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from portcullis.errors import Unauthenticated
from portcullis.identity.api_keys import ApiKeyVerifier, IssuedKey, create_key, hash_secret
from portcullis.stores.base import ApiKeyRecord
from portcullis.stores.sqlite import SqliteStore
from portcullis.testing import CountingKeyStore, ManualClock

PEPPER = b"attack-pepper-" + b"a" * 26
TTL_S = 5.0
B64URL = string.ascii_letters + string.digits + "-_"
ID_CHARS = string.ascii_lowercase + string.digits


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
    return ApiKeyVerifier(store, pepper=PEPPER, clock=clock, cache_ttl_s=TTL_S, max_cache_entries=1000)


@pytest.fixture
async def alice(store: CountingKeyStore, clock: ManualClock) -> IssuedKey:
    return await create_key(store, "alice", ("orders:read",), pepper=PEPPER, clock=clock)


def secret_of(key: str) -> str:
    return key.split("_", 2)[2]


async def reason(verifier: ApiKeyVerifier, presented: str) -> str:
    with pytest.raises(Unauthenticated) as info:
        await verifier.verify(presented)
    return info.value.reason


async def still_works(verifier: ApiKeyVerifier, issued: IssuedKey) -> None:
    assert (await verifier.verify(issued.key)).consumer_id == issued.record.consumer_id


# --- floods: junk and guesses never become store load ----------------------------------------

def _junk(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        return "".join(rng.choices(string.printable, k=rng.randrange(0, 200)))
    if kind == 1:
        return "pcl_" + "".join(rng.choices(ID_CHARS, k=12)) + "_" + "".join(rng.choices(B64URL, k=rng.choice([42, 44])))
    if kind == 2:
        return "pcl_" + "".join(rng.choices(string.ascii_uppercase, k=12)) + "_" + "".join(rng.choices(B64URL, k=43))
    if kind == 3:
        return "pcl_" + "".join(rng.choices(ID_CHARS, k=12)) + "_" + "".join(rng.choices("+/=!~ .", k=43))
    if kind == 4:
        return "Bearer pcl_" + "".join(rng.choices(ID_CHARS, k=12)) + "_" + "".join(rng.choices(B64URL, k=36))
    return "pcl_" + "x" * rng.randrange(1, 100_000)


async def test_ten_thousand_malformed_keys_never_reach_the_store(
    store: CountingKeyStore, verifier: ApiKeyVerifier, alice: IssuedKey
) -> None:
    """OWASP-API2-broken-authentication / OWASP-API4: junk is refused by shape, before any lookup."""
    rng = random.Random(2023)
    reasons = {await reason(verifier, _junk(rng)) for _ in range(10_000)}
    assert reasons == {"malformed_key"}
    assert store.gets == 0
    await still_works(verifier, alice)


async def test_ten_thousand_guesses_at_one_key_id_cost_one_lookup_per_negative_ttl(
    store: CountingKeyStore, verifier: ApiKeyVerifier, clock: ManualClock, alice: IssuedKey
) -> None:
    """OWASP-API2-broken-authentication: guessing secrets for an unknown id is answered from memory."""
    rng = random.Random(7)
    for _ in range(10_000):
        assert await reason(verifier, "pcl_abcdefgh1234_" + "".join(rng.choices(B64URL, k=43))) == "unknown_key"
    assert store.gets == 1
    await still_works(verifier, alice)


async def test_ten_thousand_guesses_at_a_real_key_cost_one_lookup_and_never_pass(
    store: CountingKeyStore, verifier: ApiKeyVerifier, alice: IssuedKey
) -> None:
    """OWASP-API2-broken-authentication: brute force of a known key id."""
    rng = random.Random(8)
    prefix = f"pcl_{alice.record.key_id}_"
    for _ in range(10_000):
        assert await reason(verifier, prefix + "".join(rng.choices(B64URL, k=43))) == "bad_secret"
    assert store.gets == 1
    await still_works(verifier, alice)


async def test_a_flood_of_distinct_made_up_ids_cannot_evict_real_keys(
    store: CountingKeyStore, verifier: ApiKeyVerifier, alice: IssuedKey
) -> None:
    """OWASP-API4-resource-consumption: memory stays bounded and the real key stays cached."""
    await still_works(verifier, alice)
    rng = random.Random(9)
    for _ in range(10_000):
        key_id = "".join(rng.choices(ID_CHARS, k=12))
        await reason(verifier, f"pcl_{key_id}_" + "A" * 43)
    before = store.gets
    await still_works(verifier, alice)
    assert store.gets == before


# --- leaked storage ---------------------------------------------------------------------------

async def test_the_database_file_never_holds_a_secret(
    db_path: Path, store: CountingKeyStore, verifier: ApiKeyVerifier, clock: ManualClock
) -> None:
    """CWE-256-plaintext-storage: read the SQLite file, its WAL and shm raw."""
    issued = [await create_key(store, f"c{i}", ("a",), pepper=PEPPER, clock=clock) for i in range(20)]
    for k in issued:
        await verifier.verify(k.key)
    await verifier.flush_last_used()

    def raw() -> bytes:
        return b"".join(p.read_bytes() for p in sorted(db_path.parent.glob(db_path.name + "*")))

    data = await asyncio.to_thread(raw)
    for k in issued:
        assert k.record.key_id.encode() in data  # the rows really are in what we read
        assert k.record.secret_hash.encode() in data
        assert secret_of(k.key).encode() not in data
        assert k.key.encode() not in data


async def test_a_leaked_row_cannot_be_checked_offline_without_the_pepper(
    store: CountingKeyStore, alice: IssuedKey
) -> None:
    """CWE-916-unkeyed-hash: the stored digest is keyed; a bare SHA-256 of the secret does not match it."""
    row = await store.inner.get(alice.record.key_id)
    assert row is not None
    secret = secret_of(alice.key)
    assert row.secret_hash != hashlib.sha256(secret.encode()).hexdigest()
    assert row.secret_hash != hash_secret(secret, b"")
    assert row.secret_hash == hmac.new(PEPPER, secret.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("forge", [
    lambda row: row.secret_hash[:43],
    lambda row: row.secret_hash[-43:],
], ids=["OWASP-API2-pass-the-hash-head", "OWASP-API2-pass-the-hash-tail"])
async def test_presenting_the_stored_hash_as_the_secret_fails(
    store: CountingKeyStore, verifier: ApiKeyVerifier, alice: IssuedKey, forge: Callable[[ApiKeyRecord], str]
) -> None:
    row = await store.inner.get(alice.record.key_id)
    assert row is not None
    assert await reason(verifier, f"pcl_{row.key_id}_{forge(row)}") == "bad_secret"
    await still_works(verifier, alice)


async def test_keys_from_a_gateway_with_another_pepper_are_refused(
    store: CountingKeyStore, verifier: ApiKeyVerifier, clock: ManualClock, alice: IssuedKey
) -> None:
    """OWASP-API2-broken-authentication: a row copied in from another deployment does not verify here."""
    foreign = await create_key(store, "mallory", ("admin",), pepper=b"other-pepper-" + b"o" * 27, clock=clock)
    assert await reason(verifier, foreign.key) == "bad_secret"
    await still_works(verifier, alice)


# --- near misses, timing and crossing -------------------------------------------------------

def _flip(secret: str, index: int) -> str:
    swapped = "B" if secret[index] != "B" else "C"
    return secret[:index] + swapped + secret[index + 1:]


@pytest.mark.parametrize("index", [0, 21, 42], ids=["CWE-208-timing-first-char", "CWE-208-timing-middle-char",
                                                   "CWE-208-timing-last-char"])
async def test_a_same_length_secret_off_by_one_character_fails_via_a_constant_time_compare(
    monkeypatch: pytest.MonkeyPatch, verifier: ApiKeyVerifier, alice: IssuedKey, index: int
) -> None:
    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    near = f"pcl_{alice.record.key_id}_{_flip(secret_of(alice.key), index)}"
    assert len(near) == len(alice.key)
    assert await reason(verifier, near) == "bad_secret"
    assert len(compared) == 1
    presented_digest, stored_digest = compared[0]
    assert stored_digest == alice.record.secret_hash
    assert len(presented_digest) == len(stored_digest) == 64  # digests, never raw secrets, are compared
    await still_works(verifier, alice)


async def test_one_consumers_secret_does_not_open_anothers_key_id(
    store: CountingKeyStore, verifier: ApiKeyVerifier, clock: ManualClock, alice: IssuedKey
) -> None:
    """OWASP-API2-broken-authentication: a secret is bound to its key id."""
    mallory = await create_key(store, "mallory", (), pepper=PEPPER, clock=clock)
    assert await reason(verifier, f"pcl_{alice.record.key_id}_{secret_of(mallory.key)}") == "bad_secret"
    assert (await verifier.verify(mallory.key)).consumer_id == "mallory"
    await still_works(verifier, alice)


@pytest.mark.parametrize("key_id", ["abc' OR '1'='1", "abcdefgh123%", "abcdefgh123_", "*"],
                         ids=["CWE-89-quote", "CWE-89-like-percent", "CWE-89-like-underscore", "CWE-89-star"])
async def test_injection_in_the_key_id_is_refused_by_shape(
    store: CountingKeyStore, verifier: ApiKeyVerifier, alice: IssuedKey, key_id: str
) -> None:
    assert await reason(verifier, f"pcl_{key_id}_{secret_of(alice.key)}") == "malformed_key"
    assert store.gets == 0
    await still_works(verifier, alice)


# --- revoked and expired keys stay dead -----------------------------------------------------

async def test_a_revoked_key_is_refused_at_once_and_forever(
    store: CountingKeyStore, verifier: ApiKeyVerifier, clock: ManualClock, alice: IssuedKey
) -> None:
    """CWE-613-insufficient-expiration: revocation beats the cache and never lapses."""
    bob = await create_key(store, "bob", (), pepper=PEPPER, clock=clock)
    await verifier.verify(bob.key)
    await verifier.revoke(bob.record.key_id)
    for _ in range(3):
        assert await reason(verifier, bob.key) == "disabled"
        clock.advance(365 * 86400)
    assert await reason(verifier, bob.key) == "disabled"


async def test_an_expired_key_is_refused_even_while_cached(
    store: CountingKeyStore, verifier: ApiKeyVerifier, clock: ManualClock, alice: IssuedKey
) -> None:
    """CWE-613-insufficient-expiration: expiry is checked on every request, not only on lookup."""
    short = await create_key(store, "bob", (), pepper=PEPPER, clock=clock, expires_in_s=2)
    await verifier.verify(short.key)
    clock.advance(2)  # inside the cache TTL
    assert await reason(verifier, short.key) == "expired"
    await still_works(verifier, alice)
