"""Every store contract runs on every backend: a SQLite file in ``tmp_path`` and a PostgreSQL
schema of the test's own (``tests/pg.py``; under ``CI=true`` an unreachable server fails the run).

``open_backend`` opens (or reopens) the same database, so persistence is part of each contract;
the caller closes what it opens. ``backend`` is one opened store, closed afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from tests.pg import PG_URL, upgraded_schema

from portcullis.stores.base import Store
from portcullis.stores.postgres import PostgresStore
from portcullis.stores.sqlite import SqliteStore

Opener = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["sqlite", "postgres"])
async def open_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    if request.param == "sqlite":
        path = str(tmp_path / "store.db")
        yield lambda: SqliteStore.connect(path)
    else:
        async with upgraded_schema() as schema:
            yield lambda: PostgresStore.connect(PG_URL, schema=schema)


@pytest.fixture
async def backend(open_backend: Opener) -> AsyncIterator[Store]:
    store = await open_backend()
    yield store
    await store.aclose()
