"""The audit trail as evidence, on SQLite and PostgreSQL alike: what the writer seals verifies in the
store and in the JSONL file; rows changed, deleted, swapped, cut off or checkpoints edited in the
database are caught by ``verify_store`` with the right record named; retention removes old records
by class, at checkpoint boundaries, and the rest still verifies.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.audit_trail import SIGNER, closing, record, sealed_batches
from tests.pg import PG_URL, pg_admin, upgraded_schema

from portcullis.audit.chain import Chainer
from portcullis.audit.jsonl import JsonlFileSink
from portcullis.audit.retention import expire
from portcullis.audit.verify import ProblemKind, VerifyReport, rotated_files, verify_files, verify_store
from portcullis.audit.writer import AuditWriter
from portcullis.config.model import AuditRetentionConfig
from portcullis.stores.base import Store
from portcullis.stores.postgres import PostgresStore
from portcullis.stores.sqlite import SqliteStore
from portcullis.testing import ManualClock

DAY = 86_400.0


@dataclass
class Db:
    open: Callable[[], Awaitable[Store]]
    sql: Callable[..., Awaitable[list[tuple[Any, ...]]]]  # raw SQL and parameters, as an attacker with access
    mark: Callable[[int], str]  # the backend's placeholder for parameter n: ? or $n


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Db]:
    if request.param == "sqlite":
        path = str(tmp_path / "store.db")

        def run(statement: str, *args: Any) -> list[tuple[Any, ...]]:
            with contextlib.closing(sqlite3.connect(path)) as conn:
                rows = conn.execute(statement, args).fetchall()
                conn.commit()
                return [tuple(r) for r in rows]

        async def sqlite_sql(statement: str, *args: Any) -> list[tuple[Any, ...]]:
            return await asyncio.to_thread(run, statement, *args)

        yield Db(lambda: SqliteStore.connect(path), sqlite_sql, lambda n: "?")
    else:
        async with upgraded_schema() as schema:
            async def pg_sql(statement: str, *args: Any) -> list[tuple[Any, ...]]:
                conn = await pg_admin(server_settings={"search_path": schema})
                try:
                    return [tuple(r) for r in await conn.fetch(statement, *args)]
                finally:
                    await conn.close()

            yield Db(lambda: PostgresStore.connect(PG_URL, schema=schema), pg_sql, lambda n: f"${n}")


@pytest.fixture
async def store(db: Db) -> AsyncIterator[Store]:
    s = await db.open()
    yield s
    await s.aclose()


async def seal_into(store: Store, count: int = 50, *, every: int = 20, clock: ManualClock | None = None,
                    record_class: str = "request", instance: str = "i1") -> ManualClock:
    clock = clock or ManualClock()
    chainer = Chainer(clock=clock, signer=SIGNER, every=every, interval_s=3600, instance=instance)
    for batch in [*sealed_batches(chainer, clock, count, record_class=record_class), closing(chainer)]:
        await store.write(batch)
    return clock


def only_problem(report: VerifyReport) -> tuple[ProblemKind, int, str | None]:
    (problem,) = report.problems
    return problem.kind, problem.seq, problem.record_id


async def record_id(db: Db, seq: int) -> str:
    (row,) = await db.sql(f"SELECT id FROM audit WHERE seq = {db.mark(1)}", seq)
    return str(row[0])


async def test_what_the_writer_seals_verifies_in_the_store_and_the_file(
    store: Store, db: Db, tmp_path: Path
) -> None:
    clock = ManualClock()
    jsonl = JsonlFileSink(tmp_path / "audit.jsonl", max_bytes=4000, backup_count=50)
    writer = AuditWriter({"file": jsonl, "store": await db.open()}, spill_path=tmp_path / "spill.jsonl", clock=clock,
                         batch_size=16, chainer=Chainer(clock=clock, signer=SIGNER, every=25))
    await writer.start()
    for n in range(70):
        writer.submit(record(clock, n, record_class="security" if n % 7 == 0 else "request"))
        if n % 10 == 9:
            await writer.flush()  # several writes, so the file rotates between them
    await writer.aclose()
    from_store = await verify_store(store, signer=SIGNER, page=7)  # pages smaller than a checkpoint interval
    assert from_store.ok, from_store.problems
    assert sorted((c.chain.split("/")[1], c.records, c.final) for c in from_store.chains) == [
        ("request", 60, True), ("security", 10, True)]
    files = await asyncio.to_thread(rotated_files, tmp_path / "audit.jsonl")
    assert len(files) >= 3
    from_file = await asyncio.to_thread(verify_files, files, signer=SIGNER)
    assert from_file.ok and from_file.chains == from_store.chains


async def test_an_untouched_store_trail_verifies(store: Store) -> None:
    await seal_into(store)
    report = await verify_store(store, signer=SIGNER)
    assert report.ok
    (chain,) = report.chains
    assert (chain.first_seq, chain.last_seq, chain.anchored, chain.final) == (1, 50, True, True)


async def test_a_changed_row_names_that_record(store: Store, db: Db) -> None:
    await seal_into(store)
    await db.sql("UPDATE audit SET record = replace(record, '\"status\":200', '\"status\":403') WHERE seq = 23")
    assert only_problem(await verify_store(store, signer=SIGNER)) == (
        ProblemKind.CHANGED, 23, await record_id(db, 23))


async def test_a_deleted_row_names_the_missing_seq(store: Store, db: Db) -> None:
    await seal_into(store)
    await db.sql("DELETE FROM audit WHERE seq = 31")
    assert only_problem(await verify_store(store, signer=SIGNER))[:2] == (ProblemKind.MISSING, 31)


async def test_two_swapped_rows_name_the_record_out_of_place(store: Store, db: Db) -> None:
    await seal_into(store)
    five, six = await db.sql("SELECT record FROM audit WHERE seq IN (5, 6) ORDER BY seq")
    six_id = await record_id(db, 6)
    for seq, text in ((5, six[0]), (6, five[0])):
        await db.sql(f"UPDATE audit SET record = {db.mark(1)} WHERE seq = {db.mark(2)}", text, seq)
    assert only_problem(await verify_store(store, signer=SIGNER)) == (ProblemKind.REORDERED, 6, six_id)


async def test_a_cut_off_tail_is_caught_by_the_final_checkpoint(store: Store, db: Db) -> None:
    await seal_into(store)
    await db.sql("DELETE FROM audit WHERE seq > 44")
    assert only_problem(await verify_store(store, signer=SIGNER))[:2] == (ProblemKind.TRUNCATED, 45)


async def test_an_edited_checkpoint_row_is_named_as_forged(store: Store, db: Db) -> None:
    await seal_into(store)
    await db.sql("UPDATE audit_checkpoints SET record = replace(record, '\"final\":false', '\"final\":true')"
                 " WHERE seq = 40")
    assert only_problem(await verify_store(store, signer=SIGNER)) == (
        ProblemKind.CHECKPOINT_FORGED, 40, "i1/request:40")


async def test_retention_removes_each_class_after_its_own_time_at_checkpoint_boundaries(store: Store) -> None:
    clock = ManualClock()
    await seal_into(store, 50, clock=clock, instance="old")
    await seal_into(store, 50, clock=clock, record_class="security", instance="old")
    clock.advance(89 * DAY)
    assert (await expire(store, AuditRetentionConfig(), now=clock.wall())).total == 0
    clock.advance(2 * DAY)
    await seal_into(store, 10, clock=clock, instance="new")  # newer request records stay
    result = await expire(store, AuditRetentionConfig(), now=clock.wall(), batch_rows=7)
    assert result.deleted == {"request": 50}
    report = await verify_store(store, signer=SIGNER)
    assert report.ok
    chains = {c.chain: c for c in report.chains}
    assert (chains["old/request"].records, chains["old/request"].anchored) == (0, True)
    assert chains["old/security"].records == 50 and chains["new/request"].records == 10
    clock.advance(300 * DAY)
    assert (await expire(store, AuditRetentionConfig(), now=clock.wall())).deleted == {"security": 50, "request": 10}
    assert (await verify_store(store, signer=SIGNER)).ok


async def test_retention_stops_at_the_last_checkpoint_before_the_cutoff(store: Store) -> None:
    clock = ManualClock()
    chainer = Chainer(clock=clock, signer=SIGNER, every=20, interval_s=3600, instance="i1")
    for batch in sealed_batches(chainer, clock, 30):  # checkpoints at 0 and 20; 21-30 not attested yet
        await store.write(batch)
    clock.advance(91 * DAY)
    result = await expire(store, AuditRetentionConfig(), now=clock.wall())
    assert result.deleted == {"request": 20}  # 21-30 wait for the checkpoint that covers them
    report = await verify_store(store, signer=SIGNER)
    assert report.ok
    (chain,) = report.chains
    assert (chain.first_seq, chain.last_seq, chain.records) == (21, 30, 10)


async def test_retention_runs_in_bounded_steps(store: Store) -> None:
    clock = await seal_into(store, 100, every=10)
    clock.advance(91 * DAY)
    first = await expire(store, AuditRetentionConfig(), now=clock.wall(), max_rows=25)
    assert (first.total, first.stopped_early) == (30, True)  # whole checkpoint intervals, stopped past 25
    assert (await verify_store(store, signer=SIGNER)).ok
    assert (await expire(store, AuditRetentionConfig(), now=clock.wall())).total == 70


def test_records_are_json_lines_that_hold_their_chain_fields() -> None:
    clock = ManualClock()
    sealed = Chainer(clock=clock, instance="i1").seal([record(clock, 1).to_dict()])
    stored = orjson.loads(sealed.lines[1])
    assert (stored["chain"], stored["seq"], len(stored["hash"])) == ("i1/request", 1, 64)
    assert sealed.lines[1].endswith(b'"hash":"' + stored["hash"].encode() + b'"}')
