"""Opening one SQLite file from many processes at once, and keeping it private: real files in
``tmp_path``, real processes, real locks held by real connections. Only the backoff's clock is
manual (``ManualClock``), so no test waits for a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import random
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.unit.stores.sqlite_opener import open_read_write

from portcullis.stores.base import ApiKeyRecord
from portcullis.stores.sqlite import SCHEMA_VERSION, SqliteStore
from portcullis.stores.sqlite_file import is_busy, retry_while_busy
from portcullis.testing import ManualClock

PROCESSES = 12
ROUNDS = 5


def modes(directory: Path) -> dict[str, int]:
    found = {}
    for p in sorted(directory.iterdir()):
        with contextlib.suppress(FileNotFoundError):  # SQLite removes -wal/-shm as its last connection closes
            found[p.name] = stat.S_IMODE(p.stat().st_mode)
    return found


def scalar(path: Path, sql: str) -> object:
    # sqlite3's own context manager commits but does not close; an open connection left to the
    # garbage collector would delete -wal/-shm at some later moment.
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchone()[0]


def test_twelve_processes_opening_the_same_fresh_file_at_once_all_succeed_and_migrate_it_once(
    tmp_path: Path,
) -> None:
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that runs threads
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    workers = [ctx.Process(target=open_read_write, args=(str(tmp_path), i, ROUNDS, barrier, results))
               for i in range(PROCESSES)]
    for w in workers:
        w.start()
    try:
        reports = [results.get(timeout=60) for _ in range(PROCESSES * ROUNDS)]
    finally:
        for w in workers:
            w.join(timeout=10)
            if w.is_alive():
                w.kill()
        results.close()
        results.join_thread()
        # The barrier's and queue's semaphores unregister themselves when collected: collect them
        # here, outside any event loop, or a later async test meets that blocking write.
        del barrier, results, workers
        gc.collect()
    assert [error for _, _, error in reports if error] == []
    for round_no in range(ROUNDS):
        path = tmp_path / f"round{round_no}.db"
        assert scalar(path, "SELECT COUNT(*) FROM schema_version") == SCHEMA_VERSION  # one row per migration
        assert scalar(path, "SELECT COUNT(DISTINCT version) FROM schema_version") == SCHEMA_VERSION
        assert scalar(path, "SELECT COUNT(*) FROM api_keys") == PROCESSES
    assert set(modes(tmp_path).values()) == {0o600}


@pytest.fixture(params=[0o022, 0o000, 0o277], ids=["usual-umask", "permissive-umask", "umask-without-owner-bits"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


async def test_a_new_database_and_its_wal_and_shm_are_readable_by_their_owner_only(tmp_path: Path, umask: int) -> None:
    store = await SqliteStore.connect(str(tmp_path / "keys.db"))
    try:
        await store.create(ApiKeyRecord(key_id="k1", consumer_id="acme", secret_hash="ab" * 32,
                                        scopes=frozenset(), created_at=1.0))
        seen = await asyncio.to_thread(modes, tmp_path)
    finally:
        await store.aclose()
    assert seen == {"keys.db": 0o600, "keys.db-shm": 0o600, "keys.db-wal": 0o600}


def open_world_readable_wal_database(path: Path) -> sqlite3.Connection:
    """A key store as an older Portcullis left it (0644), with its -wal and -shm in use."""
    path.touch(mode=0o644)
    path.chmod(0o644)
    db = sqlite3.connect(path, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    db.commit()
    return db


async def test_an_existing_world_readable_database_is_made_private_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.db"
    holder = await asyncio.to_thread(open_world_readable_wal_database, path)
    try:
        assert set((await asyncio.to_thread(modes, tmp_path)).values()) == {0o644}
        with caplog.at_level(logging.WARNING, logger="portcullis.store"):
            store = await SqliteStore.connect(str(path))
        await store.aclose()
        assert await asyncio.to_thread(modes, tmp_path) == {"keys.db": 0o600, "keys.db-shm": 0o600,
                                                             "keys.db-wal": 0o600}
    finally:
        await asyncio.to_thread(holder.close)
    assert f"{path} could be read by group or others (mode 0644); made it private (0600)" in caplog.text


# --- the bounded retry, on a manual clock ------------------------------------------------------

def lock_exclusively(path: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE IF NOT EXISTS t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def read_without_waiting(path: Path) -> int:
    with sqlite3.connect(path, timeout=0) as db:
        count: int = db.execute("SELECT COUNT(*) FROM t").fetchone()[0]
        return count


async def test_a_step_refused_as_busy_runs_again_once_the_other_connection_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    holder = await asyncio.to_thread(lock_exclusively, path)
    clock, attempts = ManualClock(), []

    async def step() -> int:
        attempts.append(clock.monotonic())
        if len(attempts) == 4:
            await asyncio.to_thread(holder.rollback)
        return await asyncio.to_thread(read_without_waiting, path)

    try:
        assert await retry_while_busy(step, clock=clock, rng=random.Random(7)) == 0
    finally:
        await asyncio.to_thread(holder.close)
    assert len(attempts) == 4
    assert attempts == sorted(attempts) and attempts[-1] > attempts[0]  # it backed off between attempts


async def test_a_lock_held_past_the_retry_budget_fails_with_the_busy_error(tmp_path: Path) -> None:
    path = tmp_path / "stuck.db"
    holder = await asyncio.to_thread(lock_exclusively, path)
    clock = ManualClock()
    started = clock.monotonic()
    try:
        with pytest.raises(sqlite3.OperationalError) as raised:
            await retry_while_busy(lambda: asyncio.to_thread(read_without_waiting, path),
                                   clock=clock, rng=random.Random(7), budget_s=2.0)
    finally:
        await asyncio.to_thread(holder.close)
    assert is_busy(raised.value)
    assert 2.0 <= clock.monotonic() - started < 2.5  # gave up once the budget was spent, not later


async def test_an_error_other_than_busy_is_not_retried(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    await asyncio.to_thread(path.write_bytes, b"this is not sqlite" * 100)
    clock, attempts = ManualClock(), []

    async def step() -> int:
        attempts.append(1)
        return await asyncio.to_thread(read_without_waiting, path)

    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        await retry_while_busy(step, clock=clock, rng=random.Random(7))
    assert len(attempts) == 1
