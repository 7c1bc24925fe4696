"""The ``ControlStore`` contract (incident blocks and emergency limits), run on every backend:
SQLite, PostgreSQL (a schema per test) and the in-memory store ``portcullis check`` plans with.

Persistence is part of the contract: what one connection writes, another one (another instance)
reads back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from tests.pg import PG_URL, upgraded_schema

from portcullis.stores.base import ControlRecord, ControlStore
from portcullis.stores.memory_controls import MemoryControlStore
from portcullis.stores.postgres import PostgresStore
from portcullis.stores.sqlite import SqliteStore

ControlOpener = Callable[[], Awaitable[ControlStore]]


@pytest.fixture(params=["sqlite", "postgres", "memory"])
async def open_controls(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ControlOpener]:
    """Each call opens the backend again (a second connection, as another instance would); the
    memory store is one object, the nearest it has to persistence."""
    opened: list[SqliteStore | PostgresStore] = []
    if request.param == "memory":
        memory = MemoryControlStore()

        async def same() -> ControlStore:
            return memory
        yield same
        return
    if request.param == "sqlite":
        path = str(tmp_path / "store.db")

        async def sqlite() -> ControlStore:
            opened.append(await SqliteStore.connect(path))
            return opened[-1]
        yield sqlite
    else:
        async with upgraded_schema() as schema:
            async def postgres() -> ControlStore:
                opened.append(await PostgresStore.connect(PG_URL, schema=schema))
                return opened[-1]
            yield postgres
            for store in opened:
                await store.aclose()
            opened.clear()
    for store in opened:
        await store.aclose()


def block(control_id: str, *, at: float = 100.0, expires_at: float | None = None, subject: str = "10.0.0.0/8",
          subject_kind: str = "address") -> ControlRecord:
    return ControlRecord(control_id=control_id, kind="block", subject_kind=subject_kind, subject=subject,
                         reason="credential stuffing from this range", created_at=at, created_by="token:abc",
                         expires_at=expires_at)


def emergency(control_id: str, *, at: float = 100.0, until: float = 200.0, restore_s: float = 50.0) -> ControlRecord:
    return ControlRecord(control_id=control_id, kind="emergency", subject_kind="route", subject="orders",
                         reason="suspected DDoS", created_at=at, created_by="token:abc", expires_at=until,
                         factor=0.1, restore_s=restore_s)


async def test_a_control_reads_back_field_for_field_from_another_connection(open_controls: ControlOpener) -> None:
    writer = await open_controls()
    made = [block("blk_1", expires_at=500.0), emergency("emg_1")]
    for record in made:
        await writer.add_control(record)
    reader = await open_controls()
    assert await reader.list_controls() == made


async def test_a_duplicate_control_id_is_a_value_error(open_controls: ControlOpener) -> None:
    store = await open_controls()
    await store.add_control(block("blk_1"))
    with pytest.raises(ValueError, match="duplicate control id"):
        await store.add_control(block("blk_1", subject="192.0.2.0/24"))


async def test_controls_list_oldest_first(open_controls: ControlOpener) -> None:
    store = await open_controls()
    for control_id, at in (("blk_b", 3.0), ("blk_a", 3.0), ("blk_c", 1.0)):
        await store.add_control(block(control_id, at=at))
    assert [r.control_id for r in await store.list_controls()] == ["blk_c", "blk_a", "blk_b"]


async def test_lifting_keeps_the_row_and_says_who_and_when(open_controls: ControlOpener) -> None:
    store = await open_controls()
    await store.add_control(block("blk_1"))
    assert await store.lift_control("blk_1", 150.0, "token:def") is True
    (lifted,) = await store.list_controls()
    assert (lifted.lifted_at, lifted.lifted_by) == (150.0, "token:def")


async def test_lifting_twice_or_lifting_nothing_is_false(open_controls: ControlOpener) -> None:
    store = await open_controls()
    await store.add_control(block("blk_1"))
    assert await store.lift_control("blk_1", 150.0, "token:def") is True
    assert await store.lift_control("blk_1", 160.0, "token:xyz") is False
    assert await store.lift_control("blk_none", 160.0, "token:xyz") is False
    (lifted,) = await store.list_controls()
    assert lifted.lifted_by == "token:def"


@pytest.mark.parametrize(("at", "expected"), [
    (149.9, ["blk_expiring", "blk_forever", "emg_restoring"]),  # same creation time: by id  # everything still has an effect
    (150.0, ["blk_forever", "emg_restoring"]),  # the block expired at 150 exactly
    (249.9, ["blk_forever", "emg_restoring"]),  # the emergency ramps back until 200 + 50
    (250.0, ["blk_forever"]),
], ids=["before-expiry", "at-block-expiry", "emergency-still-restoring", "emergency-restored"])
async def test_active_controls_are_those_not_lifted_and_still_in_effect(
    open_controls: ControlOpener, at: float, expected: list[str]
) -> None:
    store = await open_controls()
    await store.add_control(block("blk_forever"))
    await store.add_control(block("blk_expiring", expires_at=150.0))
    await store.add_control(emergency("emg_restoring", until=200.0, restore_s=50.0))
    await store.add_control(block("blk_lifted"))
    await store.lift_control("blk_lifted", 120.0, "token:abc")
    assert [r.control_id for r in await store.list_controls(active_at=at)] == expected
