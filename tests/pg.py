"""The machine's PostgreSQL for tests: its URL, whether it answers, and a fresh schema per test.

Why schemas: ``PostgresStore`` and ``upgrade`` take a ``schema`` that becomes every connection's
``search_path``, so each test gets an empty namespace in one shared database and drops it afterwards,
and tests can run side by side without seeing each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from tests.conftest import missing_service

from portcullis.stores.postgres import upgrade

# The password (ignored by the trust auth of the test server) and sslmode=disable are there for the
# blockbuster fixture: without them asyncpg reads ~/.pgpass and probes ~/.postgresql/ synchronously
# on every new connection. An override must also name both to pass under blockbuster.
PG_URL = os.environ.get(
    "PORTCULLIS_TEST_PG_URL", "postgresql://postgres:postgres@127.0.0.1:5432/test?sslmode=disable"
)


async def pg_admin(**extra: Any) -> Any:
    """A plain asyncpg connection to ``PG_URL`` (default search path), for setup and inspection."""
    return await asyncpg.connect(PG_URL, timeout=2, **extra)


async def pg_reachable() -> bool:
    try:
        conn = await pg_admin()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):  # TimeoutError is an OSError
        return False
    await conn.close()
    return True


@asynccontextmanager
async def fresh_schema() -> AsyncIterator[str]:
    """A unique schema name (not created: ``upgrade`` creates it), dropped with everything in it afterwards."""
    name = f"pcltest_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        conn = await pg_admin()
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()


@asynccontextmanager
async def upgraded_schema() -> AsyncIterator[str]:
    """A fresh schema at ``SCHEMA_VERSION`` (``upgrade`` run once), dropped afterwards. Calls
    ``missing_service`` when PostgreSQL does not answer: under ``CI=true`` that fails the test."""
    if not await pg_reachable():
        missing_service(f"PostgreSQL is not reachable at {PG_URL}")
    async with fresh_schema() as schema:
        await upgrade(PG_URL, schema=schema)
        yield schema
