"""PostgreSQL store for gateways that share state: API key records, the audit table, the vault's
encrypted secrets and the incident controls, the same contract as ``SqliteStore``, with migrations
applied only by ``upgrade``.

Why asyncpg: it speaks the PostgreSQL protocol natively on the event loop (no thread per query, no
sync driver behind an executor) and brings its own connection pool. Why a server-side
``statement_timeout`` as well as asyncpg's ``command_timeout``: PostgreSQL cancels a stuck statement
(a lock wait included) and the connection stays usable; the client timeout, a second longer, is only
the backstop for a server that stopped answering. Acquiring a pooled connection waits at most the
connect timeout plus the statement timeout. A lost connection (server restart, failover,
``pg_terminate_backend``) fails that one call and makes the pool replace all its connections, so the
next call does not meet the next dead one. asyncpg reads ``~/.pgpass`` and probes ``~/.postgresql/``
on the loop when it opens a connection whose URL names no password or ``sslmode``: a few ``stat``
calls per new connection, accepted; a URL that names both avoids them.

Why no migration on connect: many instances start at once, often during a rolling deploy where old
and new code run side by side. Changing the schema is an operator's step (``portcullis db upgrade``,
which calls ``upgrade``), run once, under ``pg_advisory_xact_lock``, in one transaction.
``PostgresStore.connect`` only checks the version: an older schema is ``SchemaNotCurrent``, a newer
one ``SchemaTooNew``, so no instance ever runs against a schema it does not know.

Why ``schema``: every connection (the pool's and ``upgrade``'s) sets ``search_path`` to it in its
startup packet, so the unqualified table names below resolve there and several gateways, or tests,
share one database, each in its own schema, with no change to any SQL text. The name is the one
identifier ever put into SQL text (``CREATE SCHEMA``), so it must match ``[a-z_][a-z0-9_]{0,62}``,
must not start with ``pg_`` (reserved), and is quoted. All other SQL is constant text with ``$n``
parameters. asyncpg, OS and timeout errors become ``StoreUnavailable`` in ``_translate`` and nowhere
else (a duplicate key id is the contract's ``ValueError``).

Where PostgreSQL differs from SQLite and this module evens it out: identifier columns are
``COLLATE "C"``, so ordering and equality are bytewise as in SQLite. Text cannot hold NUL, so a
lookup by a value containing NUL finds nothing, storing a key or secret with one is a ``ValueError``,
and an audit record's filter columns hold NUL as U+FFFD (the record itself is kept whole, as JSON
text; a JSONB column would reject ``\\u0000``, and one such record would block the audit queue).

What this module refuses to do: store a key secret (records carry only its HMAC), migrate on
connect, or return more than ``MAX_AUDIT_ROWS`` audit rows in one query. It runs past 400 lines
because, like ``sqlite.py``, it keeps the three stores beside the migrations that define their tables.
"""

from __future__ import annotations

import asyncio
import builtins
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson

from portcullis.errors import StoreUnavailable
from portcullis.stores.audit_rows import (
    AUDIT_FILTERS,
    AUDIT_INSERT_COLUMNS,
    AuditRowValues,
    audit_values,
    decode_cursor,
    encode_cursor,
    is_checkpoint,
)
from portcullis.stores.base import (
    MAX_CONTROLS,
    AdminTokenRecord,
    ApiKeyRecord,
    AuditBatch,
    AuditChainInfo,
    AuditPage,
    AuditQuery,
    AuditSearch,
    ChainLine,
    ControlRecord,
    KeyPage,
    SecretRecord,
    SigningKeyRecord,
)
from portcullis.stores.sqlite import MAX_AUDIT_ROWS, SchemaTooNew

__all__ = [
    "MAX_AUDIT_ROWS", "SCHEMA_VERSION", "PostgresStore", "SchemaNotCurrent", "SchemaTooNew", "schema_version",
    "upgrade",
]

# Migration N is _MIGRATIONS[N - 1], the same numbering as SQLite's. Append only; never edit a released one.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE api_keys (
            key_id text COLLATE "C" PRIMARY KEY,
            consumer_id text COLLATE "C" NOT NULL,
            secret_hash text NOT NULL,
            scopes text[] NOT NULL,
            created_at double precision NOT NULL,
            expires_at double precision,
            disabled boolean NOT NULL DEFAULT false,
            last_used_at double precision
        )""",
        "CREATE INDEX api_keys_consumer ON api_keys (consumer_id, created_at)",
        """CREATE TABLE audit (
            id text COLLATE "C" PRIMARY KEY,
            ts double precision NOT NULL,
            consumer_id text COLLATE "C",
            route text COLLATE "C",
            decision text COLLATE "C" NOT NULL,
            status integer NOT NULL,
            record text NOT NULL
        )""",
        "CREATE INDEX audit_ts ON audit (ts, id)",
        "CREATE INDEX audit_consumer_ts ON audit (consumer_id, ts)",
    ),
    (
        """CREATE TABLE secrets (
            name text COLLATE "C" PRIMARY KEY,
            ciphertext bytea NOT NULL,
            fingerprint text NOT NULL,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            last_used_at double precision
        )""",
    ),
    (
        """CREATE TABLE admin_tokens (
            token_id text COLLATE "C" PRIMARY KEY,
            name text NOT NULL,
            role text COLLATE "C" NOT NULL,
            secret_hash text NOT NULL,
            consumers text[] NOT NULL,
            created_at double precision NOT NULL,
            created_by text NOT NULL,
            expires_at double precision,
            revoked_at double precision,
            last_used_at double precision
        )""",
        "ALTER TABLE api_keys ADD COLUMN roles text[] NOT NULL DEFAULT '{}'",
        "ALTER TABLE api_keys ADD COLUMN previous_secret_hash text",
        "ALTER TABLE api_keys ADD COLUMN previous_valid_until double precision",
        "ALTER TABLE api_keys ADD COLUMN revoked_at double precision",
        # Until this version only a revocation disabled a key: those stay revoked for good.
        "UPDATE api_keys SET revoked_at = created_at WHERE disabled",
    ),
    # The audit trail as evidence: filter columns for search, the chain's place of
    # each record, and the checkpoints' own table. Migration 4.
    # The backfill reads the JSON text only where it has no \u0000 (jsonb refuses it; such rows keep
    # NULL columns and the default class).
    (
        "ALTER TABLE audit ADD COLUMN record_class text COLLATE \"C\" NOT NULL DEFAULT 'request'",
        "ALTER TABLE audit ADD COLUMN key_id text COLLATE \"C\"",
        "ALTER TABLE audit ADD COLUMN request_id text COLLATE \"C\"",
        "ALTER TABLE audit ADD COLUMN workflow_id text COLLATE \"C\"",
        "ALTER TABLE audit ADD COLUMN execution_id text COLLATE \"C\"",
        "ALTER TABLE audit ADD COLUMN user_id text COLLATE \"C\"",
        "ALTER TABLE audit ADD COLUMN chain text COLLATE \"C\"",
        "ALTER TABLE audit ADD COLUMN seq bigint",
        r"""UPDATE audit SET record_class = COALESCE(j ->> 'class', 'request'), key_id = j ->> 'key_id',
            request_id = j ->> 'request_id', workflow_id = j -> 'egress' ->> 'workflow_id',
            execution_id = j -> 'egress' ->> 'execution_id',
            user_id = COALESCE(j -> 'egress' ->> 'user_id', j -> 'egress' ->> 'user')
            FROM (SELECT id AS jid, record::jsonb AS j FROM audit WHERE strpos(record, '\u0000') = 0) AS parsed
            WHERE audit.id = parsed.jid""",
        "CREATE INDEX audit_chain_seq ON audit (chain, seq) WHERE chain IS NOT NULL",
        "CREATE INDEX audit_request ON audit (request_id)",
        "CREATE INDEX audit_key_ts ON audit (key_id, ts) WHERE key_id IS NOT NULL",
        "CREATE INDEX audit_workflow_ts ON audit (workflow_id, ts) WHERE workflow_id IS NOT NULL",
        "CREATE INDEX audit_execution_ts ON audit (execution_id, ts) WHERE execution_id IS NOT NULL",
        "CREATE INDEX audit_user_ts ON audit (user_id, ts) WHERE user_id IS NOT NULL",
        """CREATE TABLE audit_checkpoints (
            id text COLLATE "C" PRIMARY KEY,
            chain text COLLATE "C" NOT NULL,
            record_class text COLLATE "C" NOT NULL,
            seq bigint NOT NULL,
            ts double precision NOT NULL,
            final boolean NOT NULL,
            record text NOT NULL
        )""",
        "CREATE INDEX audit_checkpoints_chain ON audit_checkpoints (chain, seq, final)",
    ),
    # Incident controls: blocks and emergency limits.
    (
        """CREATE TABLE controls (
            control_id text COLLATE "C" PRIMARY KEY,
            kind text COLLATE "C" NOT NULL,
            subject_kind text COLLATE "C" NOT NULL,
            subject text COLLATE "C" NOT NULL,
            reason text NOT NULL,
            created_at double precision NOT NULL,
            created_by text NOT NULL,
            expires_at double precision,
            factor double precision,
            restore_s double precision NOT NULL DEFAULT 0,
            lifted_at double precision,
            lifted_by text
        )""",
        "CREATE INDEX controls_created ON controls (created_at, control_id)",
    ),
    # Request-signing keys (RFC 9421): public keys, or the vault name of a shared secret. Migration 6.
    (
        """CREATE TABLE signing_keys (
            key_id text COLLATE "C" PRIMARY KEY,
            consumer_id text COLLATE "C" NOT NULL,
            algorithm text COLLATE "C" NOT NULL,
            public_key text,
            secret_name text COLLATE "C",
            scopes text[] NOT NULL,
            created_at double precision NOT NULL,
            not_before double precision,
            expires_at double precision,
            revoked_at double precision
        )""",
        "CREATE INDEX signing_keys_consumer ON signing_keys (consumer_id, key_id)",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_MIGRATION_LOCK = 0x70636C5F6D6967  # "pcl_mig": one upgrader at a time per database
_KEY_COLUMNS = ("key_id, consumer_id, secret_hash, scopes, created_at, expires_at, disabled, last_used_at, roles,"
                " previous_secret_hash, previous_valid_until, revoked_at")
_SIGNING_KEY_COLUMNS = ("key_id, consumer_id, algorithm, public_key, secret_name, scopes, created_at, not_before,"
                        " expires_at, revoked_at")
_TOKEN_COLUMNS = ("token_id, name, role, secret_hash, consumers, created_at, created_by, expires_at, revoked_at,"
                  " last_used_at")
MAX_KEY_PAGE = 1_000
_CONTROL_COLUMNS = ("control_id, kind, subject_kind, subject, reason, created_at, created_by, expires_at, factor,"
                    " restore_s, lifted_at, lifted_by")
_SECRET_COLUMNS = "name, ciphertext, fingerprint, created_at, updated_at, last_used_at"
_AUDIT_COLUMN_LIST = ", ".join(AUDIT_INSERT_COLUMNS)
_CHECKPOINT_COLUMNS = ("id", "chain", "record_class", "seq", "ts", "final", "record")
_CONNECTION_LOST = (
    asyncpg.PostgresConnectionError, asyncpg.AdminShutdownError, asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError, asyncpg.InternalClientError, ConnectionError,
)  # InternalClientError: asyncpg's protocol state broke, seen when a FATAL arrives on an idle connection
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)


class SchemaNotCurrent(StoreUnavailable):
    """The database is at an older schema version (or empty); an operator must run the upgrade."""


@asynccontextmanager
async def _translate(duplicate: str | None = None) -> AsyncIterator[None]:
    """The one boundary for asyncpg errors. ``duplicate``: raise ``ValueError(duplicate)`` on a clash."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        if duplicate is not None:
            raise ValueError(duplicate) from exc
        raise StoreUnavailable(f"postgres: {type(exc).__name__}") from exc
    except _DB_ERRORS as exc:
        raise StoreUnavailable(f"postgres: {type(exc).__name__}: {exc}") from exc


class PostgresStore:
    """``KeyStore``, ``SecretStore`` and ``AuditSink`` over an asyncpg pool. ``await PostgresStore.connect(url)``."""

    def __init__(self, pool: Any, *, acquire_timeout_s: float) -> None:
        self._pool: Any = pool
        self._acquire_timeout_s = acquire_timeout_s

    @classmethod
    async def connect(
        cls, url: str, *, schema: str | None = None, statement_timeout_s: float = 5.0,
        connect_timeout_s: float = 5.0, min_size: int = 1, max_size: int = 10, application_name: str = "portcullis",
    ) -> PostgresStore:
        """Open the pool and check the schema version; raises ``SchemaNotCurrent``, ``SchemaTooNew`` or
        ``StoreUnavailable``. ``application_name`` tags the connections in ``pg_stat_activity``."""
        _check_schema_name(schema)
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError(f"pool sizes need 0 <= min_size <= max_size and max_size >= 1, not {min_size}, {max_size}")
        settings = _server_settings(schema, application_name, statement_timeout_s)
        async with _translate():
            pool = await asyncpg.create_pool(
                url, min_size=min_size, max_size=max_size, timeout=connect_timeout_s,
                command_timeout=statement_timeout_s + 1.0, server_settings=settings,
            )
        store = cls(pool, acquire_timeout_s=connect_timeout_s + statement_timeout_s)
        try:
            async with store._conn() as conn:
                _require_current(await _read_version(conn))
        except BaseException:
            await store.aclose()  # a refused connect leaves no pool behind
            raise
        return store

    @asynccontextmanager
    async def _conn(self, duplicate: str | None = None) -> AsyncIterator[Any]:
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("postgres: the store is not open")
        async with _translate(duplicate):
            try:
                async with pool.acquire(timeout=self._acquire_timeout_s) as conn:
                    yield conn
            except _CONNECTION_LOST:
                # A server restart or failover kills every backend at once; without this the pool
                # would hand out its other dead connections one failed call at a time.
                await pool.expire_connections()
                raise

    # --- KeyStore ---------------------------------------------------------------------------

    async def create(self, record: ApiKeyRecord) -> None:
        if not _storable(record.key_id, record.consumer_id, record.secret_hash, *record.scopes, *record.roles):
            raise ValueError("PostgreSQL text cannot hold NUL: the key record has one")
        async with self._conn(duplicate=f"duplicate key id {record.key_id!r}") as conn:
            await conn.execute(
                f"INSERT INTO api_keys ({_KEY_COLUMNS})"  # noqa: S608 - constant
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                record.key_id, record.consumer_id, record.secret_hash, sorted(record.scopes), record.created_at,
                record.expires_at, record.disabled, record.last_used_at, sorted(record.roles),
                record.previous_secret_hash, record.previous_valid_until, record.revoked_at,
            )

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        if not _storable(key_id):
            return None
        async with self._conn() as conn:
            row = await conn.fetchrow(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = $1", key_id)  # noqa: S608
        return _key_record(row) if row else None

    async def list(self, consumer_id: str | None = None) -> builtins.list[ApiKeyRecord]:
        if consumer_id is not None and not _storable(consumer_id):
            return []
        async with self._conn() as conn:
            if consumer_id is None:
                rows = await conn.fetch(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, key_id")  # noqa: S608
            else:
                rows = await conn.fetch(
                    f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE consumer_id = $1"  # noqa: S608 - constant
                    " ORDER BY created_at, key_id", consumer_id,
                )
        return [_key_record(r) for r in rows]

    async def page(self, *, consumer_id: str | None = None, consumer_prefix: str | None = None,
                   after: str | None = None, limit: int = 100) -> KeyPage:
        if not _storable(*(v for v in (consumer_id, consumer_prefix, after) if v is not None)):
            return KeyPage([], None)
        clauses: builtins.list[str] = []
        params: builtins.list[Any] = []
        if consumer_id is not None:
            params.append(consumer_id)
            clauses.append(f"consumer_id = ${len(params)}")
        if consumer_prefix is not None:  # starts_with: no wildcard in the prefix can widen it
            params.append(consumer_prefix)
            clauses.append(f"starts_with(consumer_id, ${len(params)})")
        if after is not None:
            params.append(after)
            clauses.append(f"key_id > ${len(params)}")
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        limit = max(1, min(limit, MAX_KEY_PAGE))
        params.append(limit + 1)
        sql = f"SELECT {_KEY_COLUMNS} FROM api_keys{where} ORDER BY key_id LIMIT ${len(params)}"  # noqa: S608
        async with self._conn() as conn:
            rows = await conn.fetch(sql, *params)
        keys = [_key_record(r) for r in rows[:limit]]
        return KeyPage(keys, keys[-1].key_id if len(rows) > limit else None)

    async def revoke(self, key_id: str, at: float) -> bool:
        return await self._update_key(
            "UPDATE api_keys SET disabled = true, revoked_at = COALESCE(revoked_at, $2) WHERE key_id = $1", key_id, at)

    async def set_disabled(self, key_id: str, disabled: bool) -> bool:
        return await self._update_key(
            "UPDATE api_keys SET disabled = $2 WHERE key_id = $1 AND revoked_at IS NULL", key_id, disabled)

    async def rotate(self, key_id: str, secret_hash: str, previous_valid_until: float) -> bool:
        return await self._update_key(
            "UPDATE api_keys SET previous_secret_hash = secret_hash, previous_valid_until = $2, secret_hash = $3"
            " WHERE key_id = $1 AND revoked_at IS NULL", key_id, previous_valid_until, secret_hash)

    async def _update_key(self, sql: str, key_id: str, *args: Any) -> bool:
        if not _storable(key_id):
            return False
        async with self._conn() as conn:
            status = await conn.execute(sql, key_id, *args)
        return _row_count(status) > 0

    # --- SigningKeyStore --------------------------------------------------------------------

    async def create_signing_key(self, record: SigningKeyRecord) -> None:
        if not _storable(record.key_id, record.consumer_id, record.algorithm, record.public_key or "",
                         record.secret_name or "", *record.scopes):
            raise ValueError("PostgreSQL text cannot hold NUL: the signing key record has one")
        async with self._conn(duplicate=f"duplicate signing key id {record.key_id!r}") as conn:
            await conn.execute(
                f"INSERT INTO signing_keys ({_SIGNING_KEY_COLUMNS})"  # noqa: S608 - constant
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                record.key_id, record.consumer_id, record.algorithm, record.public_key, record.secret_name,
                sorted(record.scopes), record.created_at, record.not_before, record.expires_at, record.revoked_at,
            )

    async def get_signing_key(self, key_id: str) -> SigningKeyRecord | None:
        if not _storable(key_id):
            return None
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {_SIGNING_KEY_COLUMNS} FROM signing_keys WHERE key_id = $1", key_id)  # noqa: S608
        return _signing_key_record(row) if row else None

    async def list_signing_keys(self, consumer_id: str | None = None) -> builtins.list[SigningKeyRecord]:
        if consumer_id is not None and not _storable(consumer_id):
            return []
        async with self._conn() as conn:
            if consumer_id is None:
                rows = await conn.fetch(
                    f"SELECT {_SIGNING_KEY_COLUMNS} FROM signing_keys ORDER BY key_id")  # noqa: S608 - constant
            else:
                rows = await conn.fetch(
                    f"SELECT {_SIGNING_KEY_COLUMNS} FROM signing_keys WHERE consumer_id = $1"  # noqa: S608
                    " ORDER BY key_id", consumer_id)
        return [_signing_key_record(r) for r in rows]

    async def revoke_signing_key(self, key_id: str, at: float) -> bool:
        return await self._update_key(
            "UPDATE signing_keys SET revoked_at = $2 WHERE key_id = $1 AND revoked_at IS NULL", key_id, at)

    async def expire_signing_key(self, key_id: str, at: float) -> bool:
        return await self._update_key(
            "UPDATE signing_keys SET expires_at = LEAST(COALESCE(expires_at, $2), $2) WHERE key_id = $1"
            " AND revoked_at IS NULL", key_id, at)

    # --- AdminTokenStore --------------------------------------------------------------------

    async def create_admin_token(self, record: AdminTokenRecord) -> None:
        if not _storable(record.token_id, record.name, record.role, record.created_by, *record.consumers):
            raise ValueError("PostgreSQL text cannot hold NUL: the token record has one")
        async with self._conn(duplicate=f"duplicate token id {record.token_id!r}") as conn:
            await conn.execute(
                f"INSERT INTO admin_tokens ({_TOKEN_COLUMNS})"  # noqa: S608 - constant
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                record.token_id, record.name, record.role, record.secret_hash, sorted(record.consumers),
                record.created_at, record.created_by, record.expires_at, record.revoked_at, record.last_used_at,
            )

    async def get_admin_token(self, token_id: str) -> AdminTokenRecord | None:
        if not _storable(token_id):
            return None
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {_TOKEN_COLUMNS} FROM admin_tokens WHERE token_id = $1", token_id)  # noqa: S608 - constant
        return _token_record(row) if row else None

    async def list_admin_tokens(self) -> builtins.list[AdminTokenRecord]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_TOKEN_COLUMNS} FROM admin_tokens ORDER BY created_at, token_id")  # noqa: S608 - constant
        return [_token_record(r) for r in rows]

    async def revoke_admin_token(self, token_id: str, at: float) -> bool:
        if not _storable(token_id):
            return False
        async with self._conn() as conn:
            status = await conn.execute(
                "UPDATE admin_tokens SET revoked_at = $2 WHERE token_id = $1 AND revoked_at IS NULL", token_id, at)
        return _row_count(status) > 0

    async def touch_admin_token(self, token_id: str, at: float) -> None:
        if not _storable(token_id):
            return
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE admin_tokens SET last_used_at = $2"
                " WHERE token_id = $1 AND (last_used_at IS NULL OR last_used_at < $2)", token_id, at)

    async def touch(self, key_id: str, at: float) -> None:
        """Only moves forward; the ``WHERE`` skips the write (and its row lock) when it would not."""
        if not _storable(key_id):
            return
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE api_keys SET last_used_at = $2"
                " WHERE key_id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
                key_id, at,
            )

    # --- AuditSink --------------------------------------------------------------------------

    async def write(self, batch: AuditBatch) -> None:
        """Insert a batch with ``COPY`` into a per-connection staging table, then one
        ``INSERT … SELECT … ON CONFLICT DO NOTHING``: a record whose ``id`` is already stored is
        skipped (the first copy of an id within a batch wins). Measured against one multi-row
        ``unnest`` insert (``bench/audit_sinks.py``): equal at 256 records, about 15% faster at 2,048,
        the sizes the writer sends when it is behind. Checkpoint lines go to ``audit_checkpoints``."""
        rows: builtins.list[AuditRowValues] = []
        checkpoints: builtins.list[tuple[Any, ...]] = []
        for r, line in zip(batch.rows, batch.lines, strict=True):
            if is_checkpoint(r):
                checkpoints.append((_nul_free(str(r["id"])), _nul_free(str(r["chain"])),
                                    _nul_free(str(r.get("class") or "request")), int(r["seq"]), float(r["ts"]),
                                    bool(r.get("final")), line.decode()))
            else:
                rows.append(_audit_row(r, line))
        if not rows and not checkpoints:
            return
        async with self._conn() as conn, conn.transaction():
            if rows:
                await conn.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS audit_staging (LIKE audit INCLUDING DEFAULTS)"
                    " ON COMMIT DELETE ROWS"
                )
                await conn.copy_records_to_table("audit_staging", records=rows, columns=AUDIT_INSERT_COLUMNS)
                await conn.execute(
                    f"INSERT INTO audit ({_AUDIT_COLUMN_LIST}) SELECT {_AUDIT_COLUMN_LIST}"  # noqa: S608 - constant
                    " FROM audit_staging ON CONFLICT (id) DO NOTHING"
                )
            if checkpoints:
                await conn.executemany(
                    f"INSERT INTO audit_checkpoints ({', '.join(_CHECKPOINT_COLUMNS)})"  # noqa: S608 - constant
                    " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING", checkpoints,
                )

    async def query_audit(self, query: AuditQuery) -> builtins.list[dict[str, Any]]:
        """Matching records, oldest first, at most ``min(query.limit, MAX_AUDIT_ROWS)``."""
        page = await self.search_audit(AuditSearch(
            since=query.since, until=query.until, consumer_id=query.consumer_id, route=query.route,
            decision=query.decision, limit=query.limit,
        ))
        return page.records

    async def search_audit(self, search: AuditSearch) -> AuditPage:
        clauses: builtins.list[str] = []
        params: builtins.list[Any] = []
        for column, op, attr in AUDIT_FILTERS:
            value = getattr(search, attr)
            if value is not None:
                if isinstance(value, str):
                    value = _nul_free(value)
                elif column == "ts":
                    value = float(value)  # asyncpg encodes double precision from a float only
                params.append(value)
                clauses.append(f"{column} {op} ${len(params)}")
        if search.cursor is not None:
            ts, record_id = decode_cursor(search.cursor)
            params.extend((ts, _nul_free(record_id)))
            clauses.append(f"(ts, id) > (${len(params) - 1}::double precision, ${len(params)}::text)")
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        limit = max(0, min(search.limit, MAX_AUDIT_ROWS))  # PostgreSQL refuses a negative LIMIT
        params.append(limit + 1)
        sql = f"SELECT ts, id, record FROM audit{where} ORDER BY ts, id LIMIT ${len(params)}"  # noqa: S608
        async with self._conn() as conn:
            rows = await conn.fetch(sql, *params)
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = encode_cursor(rows[-1][0], rows[-1][1]) if more and rows else None
        return AuditPage([orjson.loads(r[2]) for r in rows], cursor)

    async def audit_chains(self) -> builtins.list[AuditChainInfo]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT chain, MIN(record_class) FROM (SELECT chain, record_class FROM audit_checkpoints"
                " UNION SELECT DISTINCT chain, record_class FROM audit WHERE chain IS NOT NULL) AS c"
                " GROUP BY chain ORDER BY chain"
            )
        return [AuditChainInfo(r[0], r[1]) for r in rows]

    async def chain_lines(self, chain: str, *, after_seq: int, limit: int) -> builtins.list[ChainLine]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT seq, record FROM audit WHERE chain = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                _nul_free(chain), after_seq, max(0, limit),
            )
        return [ChainLine(r[0], r[1].encode()) for r in rows]

    async def chain_checkpoints(self, chain: str, *, after_seq: int, limit: int) -> builtins.list[dict[str, Any]]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT record FROM audit_checkpoints WHERE chain = $1 AND seq > $2 ORDER BY seq, final LIMIT $3",
                _nul_free(chain), after_seq, max(0, limit),
            )
        return [orjson.loads(r[0]) for r in rows]

    async def expire_chain(self, chain: str, *, through_seq: int, batch_rows: int) -> int:
        deleted = 0
        batch_rows = max(1, batch_rows)
        async with self._conn() as conn, conn.transaction():
            while True:
                status = await conn.execute(
                    "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE chain = $1 AND seq <= $2"
                    " ORDER BY seq LIMIT $3)", _nul_free(chain), through_seq, batch_rows,
                )
                count = _row_count(status)
                deleted += count
                if count < batch_rows:
                    break
            await conn.execute("DELETE FROM audit_checkpoints WHERE chain = $1 AND seq < $2", _nul_free(chain),
                               through_seq)
        return deleted

    # --- SecretStore ------------------------------------------------------------------------

    async def put_secret(self, record: SecretRecord) -> None:
        if not _storable(record.name, record.fingerprint):
            raise ValueError("PostgreSQL text cannot hold NUL: the secret record has one")
        async with self._conn() as conn:
            await conn.execute(
                f"INSERT INTO secrets ({_SECRET_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"  # noqa: S608 - constant
                " ON CONFLICT (name) DO UPDATE SET ciphertext = excluded.ciphertext,"
                " fingerprint = excluded.fingerprint, updated_at = excluded.updated_at",
                record.name, record.ciphertext, record.fingerprint, record.created_at, record.updated_at,
                record.last_used_at,
            )

    async def get_secret(self, name: str) -> SecretRecord | None:
        if not _storable(name):
            return None
        async with self._conn() as conn:
            row = await conn.fetchrow(f"SELECT {_SECRET_COLUMNS} FROM secrets WHERE name = $1", name)  # noqa: S608
        return _secret_record(row) if row else None

    async def list_secrets(self) -> builtins.list[SecretRecord]:
        async with self._conn() as conn:
            rows = await conn.fetch(f"SELECT {_SECRET_COLUMNS} FROM secrets ORDER BY name")  # noqa: S608 - constant
        return [_secret_record(r) for r in rows]

    async def delete_secret(self, name: str) -> bool:
        if not _storable(name):
            return False
        async with self._conn() as conn:
            return _row_count(await conn.execute("DELETE FROM secrets WHERE name = $1", name)) > 0

    async def touch_secret(self, name: str, at: float) -> None:
        if not _storable(name):
            return
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE secrets SET last_used_at = $2 WHERE name = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
                name, at,
            )

    async def replace_ciphertexts(self, ciphertexts: Mapping[str, bytes], at: float) -> None:
        """One statement in one transaction; a name that is not stored rolls the whole swap back."""
        if not ciphertexts:
            return
        async with self._conn() as conn, conn.transaction():
            rows = await conn.fetch(
                "UPDATE secrets SET ciphertext = v.ciphertext, updated_at = $3"
                " FROM unnest($1::text[], $2::bytea[]) AS v(name, ciphertext) WHERE secrets.name = v.name"
                " RETURNING secrets.name", list(ciphertexts), [bytes(c) for c in ciphertexts.values()], at,
            )
            missing = sorted(set(ciphertexts) - {r[0] for r in rows})
            if missing:
                raise StoreUnavailable(f"postgres: no secret {missing[0]!r}; nothing was replaced")

    # --- ControlStore -----------------------------------------------------------------------

    async def add_control(self, record: ControlRecord) -> None:
        if not _storable(record.control_id, record.kind, record.subject_kind, record.subject, record.reason,
                         record.created_by, record.lifted_by or ""):
            raise ValueError("PostgreSQL text cannot hold NUL: the control has one")
        async with self._conn(duplicate=f"duplicate control id {record.control_id!r}") as conn:
            await conn.execute(
                f"INSERT INTO controls ({_CONTROL_COLUMNS})"  # noqa: S608 - constant
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                record.control_id, record.kind, record.subject_kind, record.subject, record.reason,
                record.created_at, record.created_by, record.expires_at, record.factor, record.restore_s,
                record.lifted_at, record.lifted_by,
            )

    async def lift_control(self, control_id: str, at: float, by: str) -> bool:
        if not _storable(control_id):
            return False
        async with self._conn() as conn:
            status = await conn.execute(
                "UPDATE controls SET lifted_at = $2, lifted_by = $3 WHERE control_id = $1 AND lifted_at IS NULL",
                control_id, at, _nul_free(by),
            )
        return _row_count(status) > 0

    async def list_controls(self, *, active_at: float | None = None) -> builtins.list[ControlRecord]:
        async with self._conn() as conn:
            if active_at is None:
                rows = await conn.fetch(
                    f"SELECT {_CONTROL_COLUMNS} FROM controls ORDER BY created_at, control_id LIMIT $1",  # noqa: S608
                    MAX_CONTROLS,
                )
            else:
                rows = await conn.fetch(
                    f"SELECT {_CONTROL_COLUMNS} FROM controls"  # noqa: S608 - constant
                    " WHERE lifted_at IS NULL AND (expires_at IS NULL OR expires_at + restore_s > $1)"
                    " ORDER BY created_at, control_id LIMIT $2", active_at, MAX_CONTROLS,
                )
        return [_control_record(r) for r in rows]

    # --- lifecycle --------------------------------------------------------------------------

    async def ping(self) -> None:
        async with self._conn() as conn:
            await conn.fetchval("SELECT 1")

    async def aclose(self) -> None:
        """Close the pool gracefully; connections that do not close in time are dropped."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            async with asyncio.timeout(self._acquire_timeout_s):
                await pool.close()
        except _DB_ERRORS:
            pool.terminate()


async def upgrade(
    url: str, *, schema: str | None = None, connect_timeout_s: float = 5.0, application_name: str = "portcullis",
) -> tuple[int, int]:
    """Create ``schema`` if missing and apply every pending migration in one transaction, under an
    advisory lock (a concurrent upgrader waits, then finds nothing to do). Returns (before, after)."""
    _check_schema_name(schema)
    async with _translate(), _connection(url, schema, connect_timeout_s, application_name) as conn, \
            conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        if schema is not None:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')  # checked by _SCHEMA_NAME
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version"
            " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        before = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))
        _refuse_newer(before)
        for version in range(before + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[version - 1]:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
    return before, SCHEMA_VERSION


async def schema_version(
    url: str, *, schema: str | None = None, connect_timeout_s: float = 5.0, application_name: str = "portcullis",
) -> int:
    """The database's schema version; 0 when nothing was ever applied (or the schema does not exist)."""
    _check_schema_name(schema)
    async with _translate(), _connection(url, schema, connect_timeout_s, application_name) as conn:
        return await _read_version(conn)


@asynccontextmanager
async def _connection(url: str, schema: str | None, connect_timeout_s: float, application_name: str,
                      ) -> AsyncIterator[Any]:
    conn = await asyncpg.connect(url, timeout=connect_timeout_s,
                                 server_settings=_server_settings(schema, application_name, None))
    try:
        yield conn
    finally:
        try:
            await conn.close(timeout=connect_timeout_s)
        except _DB_ERRORS:
            conn.terminate()


def _check_schema_name(schema: str | None) -> None:
    if schema is not None and (not _SCHEMA_NAME.fullmatch(schema) or schema.startswith("pg_")):
        raise ValueError("a PostgreSQL schema name must match [a-z_][a-z0-9_]{0,62} and not start with pg_")


def _server_settings(schema: str | None, application_name: str, statement_timeout_s: float | None) -> dict[str, str]:
    settings = {"application_name": application_name}
    if statement_timeout_s is not None:
        settings["statement_timeout"] = str(max(1, round(statement_timeout_s * 1000)))  # milliseconds; 0 = none
    if schema is not None:
        settings["search_path"] = schema
    return settings


async def _read_version(conn: Any) -> int:
    if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
        return 0
    return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))


def _refuse_newer(version: int) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the database schema is version {version}, newer than this Portcullis knows ({SCHEMA_VERSION});"
            " upgrade Portcullis or use another store"
        )


def _require_current(version: int) -> None:
    _refuse_newer(version)
    if version < SCHEMA_VERSION:
        raise SchemaNotCurrent(
            f"the database schema is version {version}, this Portcullis needs {SCHEMA_VERSION};"
            " run `portcullis db upgrade` first"
        )


def _storable(*values: str) -> bool:
    return not any("\x00" in v for v in values)


def _nul_free(value: str) -> str:
    return value.replace("\x00", "\ufffd")


def _row_count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])  # "UPDATE 1", "DELETE 0"


def _secret_record(row: Any) -> SecretRecord:
    return SecretRecord(name=row[0], ciphertext=bytes(row[1]), fingerprint=row[2], created_at=row[3],
                        updated_at=row[4], last_used_at=row[5])


def _control_record(row: Any) -> ControlRecord:
    return ControlRecord(
        control_id=row[0], kind=row[1], subject_kind=row[2], subject=row[3], reason=row[4], created_at=row[5],
        created_by=row[6], expires_at=row[7], factor=row[8], restore_s=row[9], lifted_at=row[10], lifted_by=row[11],
    )


def _key_record(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=row[0], consumer_id=row[1], secret_hash=row[2], scopes=frozenset(row[3]),
        created_at=row[4], expires_at=row[5], disabled=row[6], last_used_at=row[7], roles=frozenset(row[8]),
        previous_secret_hash=row[9], previous_valid_until=row[10], revoked_at=row[11],
    )


def _signing_key_record(row: Any) -> SigningKeyRecord:
    return SigningKeyRecord(
        key_id=row[0], consumer_id=row[1], algorithm=row[2], public_key=row[3], secret_name=row[4],
        scopes=frozenset(row[5]), created_at=row[6], not_before=row[7], expires_at=row[8], revoked_at=row[9],
    )


def _token_record(row: Any) -> AdminTokenRecord:
    return AdminTokenRecord(
        token_id=row[0], name=row[1], role=row[2], secret_hash=row[3], consumers=frozenset(row[4]),
        created_at=row[5], created_by=row[6], expires_at=row[7], revoked_at=row[8], last_used_at=row[9],
    )


def _audit_row(record: Mapping[str, Any], line: bytes) -> AuditRowValues:
    v = audit_values(record, line)
    return AuditRowValues(
        _nul_free(v.id), v.ts, _maybe_nul_free(v.consumer_id), _maybe_nul_free(v.route), _nul_free(v.decision),
        v.status, v.record, _nul_free(v.record_class), _maybe_nul_free(v.key_id), _maybe_nul_free(v.request_id),
        _maybe_nul_free(v.workflow_id), _maybe_nul_free(v.execution_id), _maybe_nul_free(v.user_id),
        _maybe_nul_free(v.chain), v.seq,
    )


def _maybe_nul_free(value: str | None) -> str | None:
    return None if value is None else _nul_free(value)
