"""PostgreSQL-only behaviour of ``PostgresStore``: migrations by ``upgrade`` only, schema checks at
connect, schema-name validation, and every failure (unreachable server, statement timeout, killed
backends) surfacing as ``StoreUnavailable`` and nothing else.

Every test gets its own schema in the machine's PostgreSQL (``tests/pg.py``); under ``CI=true`` an
unreachable server fails the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from tests.conftest import missing_service
from tests.pg import PG_URL, fresh_schema, pg_admin, pg_reachable, upgraded_schema

from portcullis.errors import StoreUnavailable
from portcullis.stores import postgres
from portcullis.stores.base import ApiKeyRecord
from portcullis.stores.postgres import SCHEMA_VERSION, PostgresStore, SchemaNotCurrent, schema_version, upgrade
from portcullis.stores.sqlite import SchemaTooNew

UNREACHABLE = "postgresql://postgres:postgres@127.0.0.1:1/test?sslmode=disable"  # port 1: nothing listens


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A fresh, empty (not upgraded) schema name."""
    if not await pg_reachable():
        missing_service(f"PostgreSQL is not reachable at {PG_URL}")
    async with fresh_schema() as name:
        yield name


@pytest.fixture
async def current() -> AsyncIterator[str]:
    """A fresh schema at ``SCHEMA_VERSION``."""
    async with upgraded_schema() as name:
        yield name


def key(key_id: str) -> ApiKeyRecord:
    return ApiKeyRecord(key_id=key_id, consumer_id="acme", secret_hash="ab" * 32, scopes=frozenset(), created_at=1.0)


async def sql(schema: str, statement: str, *args: object) -> list[tuple[Any, ...]]:
    conn = await pg_admin(server_settings={"search_path": schema})
    try:
        return [tuple(r) for r in await conn.fetch(statement, *args)]
    finally:
        await conn.close()


async def backends(application_name: str) -> list[int]:
    return [r[0] for r in await sql("public", "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                                    application_name)]


async def until_gone(application_name: str, pids: list[int] | None = None) -> list[int]:
    """Which of ``pids`` (default: all of the name's) are still there after waiting up to 2 s: the server
    ends a backend a moment after the client hangs up or ``pg_terminate_backend`` returns."""
    for _ in range(100):
        left = [p for p in await backends(application_name) if pids is None or p in pids]
        if not left:
            break
        await asyncio.sleep(0.02)
    return left


# --- migrations --------------------------------------------------------------------------------

async def test_connect_refuses_a_fresh_schema_and_names_the_upgrade_command(schema: str) -> None:
    app = f"pcltest-{uuid.uuid4().hex[:8]}"
    with pytest.raises(SchemaNotCurrent, match=r"version 0, .*`portcullis db upgrade`"):
        await PostgresStore.connect(PG_URL, schema=schema, application_name=app)
    assert await until_gone(app) == []  # the refused connect closed its pool


async def test_connect_does_not_migrate(schema: str) -> None:
    with pytest.raises(SchemaNotCurrent):
        await PostgresStore.connect(PG_URL, schema=schema)
    assert await schema_version(PG_URL, schema=schema) == 0
    assert await sql("public", "SELECT 1 FROM pg_namespace WHERE nspname = $1", schema) == []


async def test_upgrade_applies_every_migration_once_and_is_idempotent(schema: str) -> None:
    assert await upgrade(PG_URL, schema=schema) == (0, SCHEMA_VERSION)
    assert await upgrade(PG_URL, schema=schema) == (SCHEMA_VERSION, SCHEMA_VERSION)
    assert await schema_version(PG_URL, schema=schema) == SCHEMA_VERSION
    assert await sql(schema, "SELECT version FROM schema_version ORDER BY version") == [
        (v,) for v in range(1, SCHEMA_VERSION + 1)
    ]
    store = await PostgresStore.connect(PG_URL, schema=schema)
    await store.ping()
    await store.aclose()


async def test_an_older_schema_is_brought_up_to_date(schema: str) -> None:
    conn = await pg_admin()
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    await sql(schema, "CREATE TABLE schema_version"
                      " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
    for statement in postgres._MIGRATIONS[0]:  # the schema as version 1 left it
        await sql(schema, statement)
    await sql(schema, "INSERT INTO schema_version (version) VALUES (1)")
    with pytest.raises(SchemaNotCurrent, match=rf"version 1, this Portcullis needs {SCHEMA_VERSION}"):
        await PostgresStore.connect(PG_URL, schema=schema)
    assert await upgrade(PG_URL, schema=schema) == (1, SCHEMA_VERSION)


async def test_concurrent_upgrades_all_succeed_and_migrate_once(schema: str) -> None:
    results = await asyncio.gather(*(upgrade(PG_URL, schema=schema) for _ in range(4)))
    assert sorted(results) == [(0, SCHEMA_VERSION)] + [(SCHEMA_VERSION, SCHEMA_VERSION)] * 3
    assert await sql(schema, "SELECT COUNT(*) FROM schema_version") == [(SCHEMA_VERSION,)]


async def test_a_schema_newer_than_this_code_is_refused_by_connect_and_upgrade(current: str) -> None:
    await sql(current, "INSERT INTO schema_version (version) VALUES ($1)", SCHEMA_VERSION + 1)
    with pytest.raises(SchemaTooNew, match=rf"version {SCHEMA_VERSION + 1}, newer"):
        await PostgresStore.connect(PG_URL, schema=current)
    with pytest.raises(SchemaTooNew):
        await upgrade(PG_URL, schema=current)


async def test_schemas_isolate_gateways_sharing_a_database(current: str) -> None:
    async with upgraded_schema() as other:
        a = await PostgresStore.connect(PG_URL, schema=current)
        b = await PostgresStore.connect(PG_URL, schema=other)
        try:
            await a.create(key("k1"))
            assert await b.get("k1") is None
            await b.create(key("k1"))  # no clash across schemas
        finally:
            await a.aclose()
            await b.aclose()


@pytest.mark.parametrize("name", [
    "Pcl", "1abc", "a-b", "a b", 'a"b', "a;drop schema public", "abc\n", "", "x" * 64, "pg_toast", "ümlaut",
], ids=["upper", "digit-first", "dash", "space", "quote", "injection", "trailing-newline", "empty", "too-long",
        "reserved-pg-prefix", "non-ascii"])
async def test_an_invalid_schema_name_is_refused_before_any_connection(name: str) -> None:
    # The URL does not answer: a refusal that came from the server would be StoreUnavailable.
    with pytest.raises(ValueError, match="schema name"):
        await PostgresStore.connect(UNREACHABLE, schema=name)
    with pytest.raises(ValueError, match="schema name"):
        await upgrade(UNREACHABLE, schema=name)
    with pytest.raises(ValueError, match="schema name"):
        await schema_version(UNREACHABLE, schema=name)


# --- failures are StoreUnavailable ------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda: PostgresStore.connect(UNREACHABLE, connect_timeout_s=0.5),
    lambda: upgrade(UNREACHABLE, connect_timeout_s=0.5),
    lambda: schema_version(UNREACHABLE, connect_timeout_s=0.5),
], ids=["connect", "upgrade", "schema_version"])
async def test_an_unreachable_server_is_unavailable_quickly(call: Callable[[], Awaitable[object]]) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await call()
    assert time.monotonic() - started < 2.0


async def test_a_statement_timeout_is_unavailable_and_the_store_recovers(current: str) -> None:
    store = await PostgresStore.connect(PG_URL, schema=current, statement_timeout_s=0.2)
    await store.create(key("k1"))
    holder = await pg_admin(server_settings={"search_path": current})
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="QueryCanceled"):
            await store.get("k1")
        assert time.monotonic() - started < 2.0
        await tx.rollback()
        assert await store.get("k1") == key("k1")
    finally:
        await holder.close()
        await store.aclose()


async def test_killed_backends_surface_only_as_unavailable_and_the_pool_reconnects(current: str) -> None:
    app = f"pcltest-{uuid.uuid4().hex[:8]}"
    store = await PostgresStore.connect(PG_URL, schema=current, application_name=app, max_size=3)
    try:
        await store.create(key("k1"))
        for _ in range(3):
            await asyncio.gather(*(store.get("k1") for _ in range(3)))  # warm several pooled connections
            pids = await backends(app)
            assert pids
            await sql("public", "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", pids)
            assert await until_gone(app, pids) == []  # termination is asynchronous; let it finish
            with contextlib.suppress(StoreUnavailable):  # the one allowed failure: a dead connection met
                assert await store.get("k1") == key("k1")  # else the pool noticed and reconnected
            assert await store.get("k1") == key("k1")
            await store.ping()
    finally:
        await store.aclose()
    assert await until_gone(app) == []


async def test_after_a_lost_connection_the_next_call_succeeds(current: str) -> None:
    # Calls race the terminations here (no waiting): any call may meet a dying connection, but one
    # failure makes the pool replace all its connections, so the call after it succeeds.
    app = f"pcltest-{uuid.uuid4().hex[:8]}"
    store = await PostgresStore.connect(PG_URL, schema=current, application_name=app, max_size=4)
    try:
        await store.create(key("k1"))
        for _ in range(5):
            await asyncio.gather(*(store.get("k1") for _ in range(4)))
            await sql("public", "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", await backends(app))
            failed = False
            for _ in range(4):
                try:
                    assert await store.get("k1") == key("k1")
                    failed = False
                except StoreUnavailable:
                    assert not failed, "two failures in a row"
                    failed = True
            assert not failed
    finally:
        await store.aclose()


async def test_closing_twice_is_harmless(current: str) -> None:
    store = await PostgresStore.connect(PG_URL, schema=current)
    await store.aclose()
    await store.aclose()
    with pytest.raises(StoreUnavailable):
        await store.list_secrets()


# --- what PostgreSQL cannot store --------------------------------------------------------------

async def test_values_with_nul_are_refused_on_write_and_match_nothing_on_read(current: str) -> None:
    # PostgreSQL text cannot hold U+0000; asking for one must not look like an outage.
    store = await PostgresStore.connect(PG_URL, schema=current)
    try:
        with pytest.raises(ValueError, match="NUL"):
            await store.create(key("k\x001"))
        assert await store.get("k\x001") is None
        assert await store.list("acme\x00") == []
        assert await store.revoke("k\x001", 1.0) is False
        await store.touch("k\x001", 1.0)
        assert await store.get_secret("s\x00") is None
        assert await store.delete_secret("s\x00") is False
    finally:
        await store.aclose()
