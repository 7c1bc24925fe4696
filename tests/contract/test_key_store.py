"""The ``KeyStore`` contract, run on every backend: SQLite and PostgreSQL.

Each backend is a real database (SQLite files live in ``tmp_path``; PostgreSQL gets a fresh schema
per test, upgraded once, see ``tests/pg.py``). ``open_backend`` reopens the same database, so
persistence is part of the contract. The SQLite-only section at the end covers its schema in a
file; PostgreSQL's own behaviour (migrations, timeouts, lost connections) is in
``test_postgres_store.py``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from portcullis.errors import StoreUnavailable
from portcullis.stores.base import ApiKeyRecord, KeyStore, Store
from portcullis.stores.sqlite import SCHEMA_VERSION, SchemaTooNew, SqliteStore

Opener = Callable[[], Awaitable[KeyStore]]


@pytest.fixture
def key_store(backend: Store) -> Store:
    return backend


def record(key_id: str, consumer: str = "acme", created: float = 1.0, **extra: Any) -> ApiKeyRecord:
    extra.setdefault("scopes", frozenset({"orders:read", "orders:write"}))
    return ApiKeyRecord(key_id=key_id, consumer_id=consumer, secret_hash="ab" * 32, created_at=created, **extra)


async def test_a_created_key_reads_back_field_for_field(key_store: KeyStore) -> None:
    rec = record("k1", expires_at=99.5, last_used_at=7.25)
    await key_store.create(rec)
    assert await key_store.get("k1") == rec


async def test_a_key_without_scopes_or_expiry_reads_back(key_store: KeyStore) -> None:
    rec = ApiKeyRecord(key_id="k1", consumer_id="acme", secret_hash="cd" * 32, scopes=frozenset(), created_at=3.0)
    await key_store.create(rec)
    assert await key_store.get("k1") == rec


async def test_an_unknown_key_is_none(key_store: KeyStore) -> None:
    assert await key_store.get("nope") is None


async def test_key_ids_are_matched_exactly(key_store: KeyStore) -> None:
    await key_store.create(record("abc"))
    for near in ("ABC", "ab", "abc ", "a%", "abc' OR '1'='1", "abc\x00", "abc'; DROP TABLE api_keys; --"):
        assert await key_store.get(near) is None


async def test_injection_shaped_ids_round_trip_as_data(key_store: KeyStore) -> None:
    evil = "k'); DELETE FROM api_keys; --"
    rec = record(evil, consumer="acme' OR '1'='1", scopes=frozenset({"a'b", "$1", "{x,y}"}))
    await key_store.create(rec)
    await key_store.create(record("k2"))
    assert await key_store.get(evil) == rec
    assert [r.key_id for r in await key_store.list("acme' OR '1'='1")] == [evil]
    assert await key_store.revoke(evil, 1.0) is True
    assert len(await key_store.list()) == 2


async def test_ties_in_creation_time_are_ordered_by_key_id_bytewise(key_store: KeyStore) -> None:
    # PostgreSQL's default collation would sort "B" after "a"; SQLite compares bytes.
    for key_id in ("b", "a", "B", "_", "A"):
        await key_store.create(record(key_id))
    assert [r.key_id for r in await key_store.list()] == ["A", "B", "_", "a", "b"]


async def test_list_is_oldest_first_and_filters_by_consumer(key_store: KeyStore) -> None:
    await key_store.create(record("k3", "acme", 3.0))
    await key_store.create(record("k1", "acme", 1.0))
    await key_store.create(record("k2", "other", 2.0))
    assert [r.key_id for r in await key_store.list()] == ["k1", "k2", "k3"]
    assert [r.key_id for r in await key_store.list("acme")] == ["k1", "k3"]
    assert await key_store.list("nobody") == []


async def test_a_duplicate_key_id_is_a_value_error_and_keeps_the_first(key_store: KeyStore) -> None:
    await key_store.create(record("k1"))
    with pytest.raises(ValueError, match="duplicate"):
        await key_store.create(record("k1", "mallory"))
    got = await key_store.get("k1")
    assert got is not None and got.consumer_id == "acme"


async def test_revoke_disables_the_key_for_good(key_store: KeyStore) -> None:
    await key_store.create(record("k1"))
    assert await key_store.revoke("k1", 5.0) is True
    assert await key_store.revoke("k1", 6.0) is True  # revoking twice is harmless, and keeps the first time
    got = await key_store.get("k1")
    assert got is not None and got.disabled and got.revoked_at == 5.0 and got.state == "revoked"


async def test_revoking_an_unknown_key_is_false(key_store: KeyStore) -> None:
    assert await key_store.revoke("nope", 1.0) is False


async def test_last_use_only_moves_forward(key_store: KeyStore) -> None:
    await key_store.create(record("k1"))
    await key_store.touch("k1", 50.0)
    await key_store.touch("k1", 40.0)
    got = await key_store.get("k1")
    assert got is not None and got.last_used_at == 50.0


async def test_touching_an_unknown_key_is_harmless(key_store: KeyStore) -> None:
    await key_store.touch("nope", 1.0)
    assert await key_store.get("nope") is None


async def test_concurrent_writes_all_land(key_store: KeyStore) -> None:
    await asyncio.gather(*(key_store.create(record(f"k{i:03d}", created=float(i))) for i in range(50)))
    await asyncio.gather(*(key_store.touch(f"k{i:03d}", 100.0 + i) for i in range(50)))
    records = await key_store.list()
    assert [r.key_id for r in records] == [f"k{i:03d}" for i in range(50)]
    assert [r.last_used_at for r in records] == [100.0 + i for i in range(50)]


async def test_ping_answers(key_store: KeyStore) -> None:
    await key_store.ping()


async def test_keys_survive_a_reopen(open_backend: Opener) -> None:
    store = await open_backend()
    try:
        await store.create(record("k1"))
        await store.revoke("k1", 2.0)
    finally:
        await store.aclose()
    store = await open_backend()
    try:
        assert await store.get("k1") == record("k1", disabled=True, revoked_at=2.0)
    finally:
        await store.aclose()


async def test_a_closed_store_is_unavailable(open_backend: Opener) -> None:
    store = await open_backend()
    await store.aclose()
    with pytest.raises(StoreUnavailable):
        await store.get("k1")
    with pytest.raises(StoreUnavailable):
        await store.ping()


# --- SQLite only: the schema lives in the file -------------------------------------------------

def _sql(path: Path, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute(statement, params).fetchall()
        db.commit()
        return rows
    finally:
        db.close()


async def test_sqlite_records_its_schema_version_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    store = await SqliteStore.connect(str(path))
    await store.aclose()
    assert await asyncio.to_thread(_sql, path, "SELECT MAX(version) FROM schema_version") == [(SCHEMA_VERSION,)]
    assert await asyncio.to_thread(_sql, path, "PRAGMA journal_mode") == [("wal",)]


async def test_sqlite_reopening_does_not_migrate_twice(tmp_path: Path) -> None:
    path = tmp_path / "twice.db"
    for _ in range(2):
        store = await SqliteStore.connect(str(path))
        await store.aclose()
    assert await asyncio.to_thread(_sql, path, "SELECT COUNT(*) FROM schema_version") == [(SCHEMA_VERSION,)]


async def test_sqlite_two_processes_opening_a_fresh_file_at_once_both_succeed(tmp_path: Path) -> None:
    path = str(tmp_path / "race.db")
    stores = await asyncio.gather(*(SqliteStore.connect(path) for _ in range(4)))
    for store in stores:
        await store.ping()
        await store.aclose()


async def test_sqlite_a_schema_newer_than_this_code_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    store = await SqliteStore.connect(str(path))
    await store.aclose()
    await asyncio.to_thread(_sql, path, "INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaTooNew, match=rf"version {SCHEMA_VERSION + 1}, newer"):
        await SqliteStore.connect(str(path))


async def test_sqlite_an_unopenable_path_is_unavailable_and_leaves_no_thread_behind(tmp_path: Path) -> None:
    # aiosqlite's failed connect leaves its worker thread to stop later; when that happened after
    # the event loop closed, the thread raised into the next test (a CI failure, once).
    before = set(threading.enumerate())
    with pytest.raises(StoreUnavailable):
        await SqliteStore.connect(str(tmp_path / "no" / "such" / "dir" / "keys.db"))
    assert [t for t in threading.enumerate() if t not in before and "_connection_worker" in t.name] == []


async def test_sqlite_a_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    await asyncio.to_thread(path.write_bytes, b"this is not sqlite" * 100)
    with pytest.raises(StoreUnavailable):
        await SqliteStore.connect(str(path))
