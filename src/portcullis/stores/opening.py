"""Open the configured durable store, or upgrade its schema: the one place that reads ``store.url``.

Why the two backends differ at start-up: a SQLite file belongs to one machine and migrates itself
when opened; a PostgreSQL database is shared by every instance, so its schema changes only when
an operator runs ``portcullis db upgrade``, and a gateway refuses to serve on a schema it does not
know (older or newer), instead of several instances racing to migrate it during a rolling deploy.
"""

from __future__ import annotations

from pathlib import Path

from portcullis.config.model import StoreConfig
from portcullis.stores import postgres, sqlite
from portcullis.stores.base import Store

__all__ = ["open_store", "store_version", "upgrade_store"]


def sqlite_file(cfg: StoreConfig, base_dir: Path | None) -> str:
    path = Path(cfg.sqlite_path)
    return str(path if path.is_absolute() or base_dir is None else base_dir / path)


async def open_store(cfg: StoreConfig, *, base_dir: Path | None = None) -> Store:
    """Connect; raises ``StoreUnavailable`` (``SchemaNotCurrent``/``SchemaTooNew`` for a schema mismatch)."""
    if cfg.is_postgres:
        return await postgres.PostgresStore.connect(
            cfg.url, schema=cfg.schema_name, statement_timeout_s=cfg.statement_timeout,
            connect_timeout_s=cfg.connect_timeout, max_size=cfg.pool_size,
            application_name=f"portcullis/{cfg.schema_name}" if cfg.schema_name else "portcullis",
        )
    return await sqlite.SqliteStore.connect(sqlite_file(cfg, base_dir))


async def upgrade_store(cfg: StoreConfig, *, base_dir: Path | None = None) -> tuple[int, int]:
    """Apply pending migrations; (version before, version after)."""
    if cfg.is_postgres:
        return await postgres.upgrade(cfg.url, schema=cfg.schema_name, connect_timeout_s=cfg.connect_timeout)
    path = sqlite_file(cfg, base_dir)
    before = await sqlite.schema_version(path)
    store = await sqlite.SqliteStore.connect(path)  # migrates on open
    await store.aclose()
    return before, sqlite.SCHEMA_VERSION


async def store_version(cfg: StoreConfig, *, base_dir: Path | None = None) -> tuple[int, int]:
    """(the database's schema version, the version this Portcullis needs)."""
    if cfg.is_postgres:
        current = await postgres.schema_version(cfg.url, schema=cfg.schema_name, connect_timeout_s=cfg.connect_timeout)
        return current, postgres.SCHEMA_VERSION
    return await sqlite.schema_version(sqlite_file(cfg, base_dir)), sqlite.SCHEMA_VERSION
