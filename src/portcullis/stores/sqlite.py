"""SQLite store for one machine: API key records, the audit table, the vault's encrypted secrets and
the incident controls (blocks, emergency limits), with versioned migrations.

Why aiosqlite: every query runs on the connection's own thread, so the event loop never blocks on
the disk. Why WAL: the gateway reads keys while the CLI creates or revokes them from another
process. Why a write lock: one connection is shared by every coroutine, and a batch's transaction
must not interleave with another coroutine's statements.

Migrations are numbered tuples of statements below (kept in code, so no package data is needed);
``schema_version`` records each one applied. They run inside ``BEGIN IMMEDIATE``, so two processes
opening a fresh file at once cannot both migrate it, and a database whose schema is newer than this
code knows is refused with ``SchemaTooNew``. Any number of processes may open, create and migrate
the same file at once: ``sqlite_file`` creates it private (``0600``) and retries the WAL switch and
the migration while another opener holds the lock.

All SQL is parameterised. sqlite3 and aiosqlite errors become ``StoreUnavailable`` in
``_translate`` and nowhere else (a duplicate key id is the contract's ``ValueError``).

What this module refuses to do: store a key secret (records carry only its HMAC), or return more
than ``MAX_AUDIT_ROWS`` audit rows in one query.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import random
import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from portcullis.clock import Clock, SystemClock
from portcullis.errors import StoreUnavailable
from portcullis.stores.audit_rows import (
    AUDIT_FILTERS,
    AUDIT_INSERT_COLUMNS,
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
from portcullis.stores.sqlite_file import BUSY_TIMEOUT_S, make_private, retry_while_busy

__all__ = ["MAX_AUDIT_ROWS", "MAX_KEY_PAGE", "SCHEMA_VERSION", "SchemaTooNew", "SqliteStore", "schema_version"]

# Migration N is _MIGRATIONS[N - 1]. Append only; never edit a released one.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY,
            consumer_id TEXT NOT NULL,
            secret_hash TEXT NOT NULL,
            scopes TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL,
            disabled INTEGER NOT NULL DEFAULT 0,
            last_used_at REAL
        )""",
        "CREATE INDEX api_keys_consumer ON api_keys (consumer_id, created_at)",
        """CREATE TABLE audit (
            id TEXT PRIMARY KEY,
            ts REAL NOT NULL,
            consumer_id TEXT,
            route TEXT,
            decision TEXT NOT NULL,
            status INTEGER NOT NULL,
            record TEXT NOT NULL
        )""",
        "CREATE INDEX audit_ts ON audit (ts)",
        "CREATE INDEX audit_consumer_ts ON audit (consumer_id, ts)",
    ),
    (
        """CREATE TABLE secrets (
            name TEXT PRIMARY KEY,
            ciphertext BLOB NOT NULL,
            fingerprint TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            last_used_at REAL
        )""",
    ),
    (
        """CREATE TABLE admin_tokens (
            token_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            role TEXT NOT NULL,
            secret_hash TEXT NOT NULL,
            consumers TEXT NOT NULL,
            created_at REAL NOT NULL,
            created_by TEXT NOT NULL,
            expires_at REAL,
            revoked_at REAL,
            last_used_at REAL
        )""",
        "ALTER TABLE api_keys ADD COLUMN roles TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE api_keys ADD COLUMN previous_secret_hash TEXT",
        "ALTER TABLE api_keys ADD COLUMN previous_valid_until REAL",
        "ALTER TABLE api_keys ADD COLUMN revoked_at REAL",
        # Until this version only a revocation disabled a key: those stay revoked for good.
        "UPDATE api_keys SET revoked_at = created_at WHERE disabled = 1",
    ),
    # The audit trail as evidence: filter columns for search, the chain's place of
    # each record, and the checkpoints' own table. Migration 4.
    (
        "ALTER TABLE audit ADD COLUMN record_class TEXT NOT NULL DEFAULT 'request'",
        "ALTER TABLE audit ADD COLUMN key_id TEXT",
        "ALTER TABLE audit ADD COLUMN request_id TEXT",
        "ALTER TABLE audit ADD COLUMN workflow_id TEXT",
        "ALTER TABLE audit ADD COLUMN execution_id TEXT",
        "ALTER TABLE audit ADD COLUMN user_id TEXT",
        "ALTER TABLE audit ADD COLUMN chain TEXT",
        "ALTER TABLE audit ADD COLUMN seq INTEGER",
        """UPDATE audit SET record_class = COALESCE(json_extract(record, '$.class'), 'request'),
            key_id = json_extract(record, '$.key_id'), request_id = json_extract(record, '$.request_id'),
            workflow_id = json_extract(record, '$.egress.workflow_id'),
            execution_id = json_extract(record, '$.egress.execution_id'),
            user_id = COALESCE(json_extract(record, '$.egress.user_id'), json_extract(record, '$.egress.user'))
            WHERE json_valid(record)""",
        "CREATE INDEX audit_chain_seq ON audit (chain, seq) WHERE chain IS NOT NULL",
        "CREATE INDEX audit_request ON audit (request_id)",
        "CREATE INDEX audit_key_ts ON audit (key_id, ts) WHERE key_id IS NOT NULL",
        "CREATE INDEX audit_workflow_ts ON audit (workflow_id, ts) WHERE workflow_id IS NOT NULL",
        "CREATE INDEX audit_execution_ts ON audit (execution_id, ts) WHERE execution_id IS NOT NULL",
        "CREATE INDEX audit_user_ts ON audit (user_id, ts) WHERE user_id IS NOT NULL",
        """CREATE TABLE audit_checkpoints (
            id TEXT PRIMARY KEY,
            chain TEXT NOT NULL,
            record_class TEXT NOT NULL,
            seq INTEGER NOT NULL,
            ts REAL NOT NULL,
            final INTEGER NOT NULL,
            record TEXT NOT NULL
        )""",
        "CREATE INDEX audit_checkpoints_chain ON audit_checkpoints (chain, seq, final)",
    ),
    # Incident controls: blocks and emergency limits.
    (
        """CREATE TABLE controls (
            control_id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            subject_kind TEXT NOT NULL,
            subject TEXT NOT NULL,
            reason TEXT NOT NULL,
            created_at REAL NOT NULL,
            created_by TEXT NOT NULL,
            expires_at REAL,
            factor REAL,
            restore_s REAL NOT NULL DEFAULT 0,
            lifted_at REAL,
            lifted_by TEXT
        )""",
        "CREATE INDEX controls_created ON controls (created_at, control_id)",
    ),
    # Request-signing keys (RFC 9421): public keys, or the vault name of a shared secret. Migration 6.
    (
        """CREATE TABLE signing_keys (
            key_id TEXT PRIMARY KEY,
            consumer_id TEXT NOT NULL,
            algorithm TEXT NOT NULL,
            public_key TEXT,
            secret_name TEXT,
            scopes TEXT NOT NULL,
            created_at REAL NOT NULL,
            not_before REAL,
            expires_at REAL,
            revoked_at REAL
        )""",
        "CREATE INDEX signing_keys_consumer ON signing_keys (consumer_id, key_id)",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)
MAX_AUDIT_ROWS = 10_000
MAX_KEY_PAGE = 1_000
_SECRET_COLUMNS = "name, ciphertext, fingerprint, created_at, updated_at, last_used_at"
_KEY_COLUMNS = ("key_id, consumer_id, secret_hash, scopes, created_at, expires_at, disabled, last_used_at, roles,"
                " previous_secret_hash, previous_valid_until, revoked_at")
_TOKEN_COLUMNS = ("token_id, name, role, secret_hash, consumers, created_at, created_by, expires_at, revoked_at,"
                  " last_used_at")
_SIGNING_KEY_COLUMNS = ("key_id, consumer_id, algorithm, public_key, secret_name, scopes, created_at, not_before,"
                        " expires_at, revoked_at")
_CONTROL_COLUMNS = ("control_id, kind, subject_kind, subject, reason, created_at, created_by, expires_at, factor,"
                    " restore_s, lifted_at, lifted_by")
_AUDIT_INSERT = (
    f"INSERT OR IGNORE INTO audit ({', '.join(AUDIT_INSERT_COLUMNS)})"  # noqa: S608 - constant columns
    f" VALUES ({', '.join('?' * len(AUDIT_INSERT_COLUMNS))})"
)


class SchemaTooNew(StoreUnavailable):
    """The database was migrated by a newer Portcullis; this one will not touch it."""


@asynccontextmanager
async def _translate(duplicate: str | None = None) -> AsyncIterator[None]:
    """The one boundary for sqlite errors. ``duplicate``: raise ``ValueError(duplicate)`` on a clash."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if duplicate is not None:
            raise ValueError(duplicate) from exc
        raise StoreUnavailable(f"sqlite: {type(exc).__name__}") from exc
    except (sqlite3.Error, ValueError) as exc:  # aiosqlite raises ValueError on a closed connection
        raise StoreUnavailable(f"sqlite: {type(exc).__name__}: {exc}") from exc


class SqliteStore:
    """``KeyStore`` and ``AuditSink`` over one SQLite file. ``await SqliteStore.connect(path)``."""

    def __init__(self, path: str, *, clock: Clock | None = None, rng: random.Random | None = None) -> None:
        self._path = path
        self._db: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()

    @classmethod
    async def connect(cls, path: str, *, clock: Clock | None = None, rng: random.Random | None = None) -> SqliteStore:
        """Open the file (creating it), migrate it, and return the store. ``clock`` and ``rng`` pace
        the retries while another process holds the file's lock."""
        store = cls(path, clock=clock, rng=rng)
        await store.open()
        return store

    async def open(self) -> None:
        """Connect, switch to WAL and apply pending migrations. Raises ``StoreUnavailable``."""
        if self._db is not None:
            return
        async with _translate():
            await asyncio.to_thread(make_private, self._path)
            # Open once on a worker thread first: when aiosqlite's own connect fails, it leaves a
            # stop request for its thread that nobody awaits, and that thread then calls into an
            # event loop that may already be closed. A probe that fails here never starts it.
            await asyncio.to_thread(_probe, self._path)
            db = await aiosqlite.connect(self._path, timeout=BUSY_TIMEOUT_S)
            try:
                await retry_while_busy(lambda: _enable_wal(db), clock=self._clock, rng=self._rng)
                await db.execute("PRAGMA synchronous=NORMAL")
                await retry_while_busy(lambda: _migrate(db), clock=self._clock, rng=self._rng)
            except BaseException:
                await db.close()
                raise
        self._db = db

    @property
    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreUnavailable("sqlite: the store is not open")
        return self._db

    # --- KeyStore ---------------------------------------------------------------------------

    async def create(self, record: ApiKeyRecord) -> None:
        async with self._write_lock, _translate(duplicate=f"duplicate key id {record.key_id!r}"):
            await self._conn.execute(
                f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                (record.key_id, record.consumer_id, record.secret_hash, _json_list(record.scopes),
                 record.created_at, record.expires_at, int(record.disabled), record.last_used_at,
                 _json_list(record.roles), record.previous_secret_hash, record.previous_valid_until,
                 record.revoked_at),
            )
            await self._conn.commit()

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        async with _translate(), self._conn.execute(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,)  # noqa: S608 - constant
        ) as cur:
            row = await cur.fetchone()
        return _key_record(row) if row else None

    async def list(self, consumer_id: str | None = None) -> builtins.list[ApiKeyRecord]:
        sql = f"SELECT {_KEY_COLUMNS} FROM api_keys"  # noqa: S608 - constant
        params: tuple[Any, ...] = ()
        if consumer_id is not None:
            sql += " WHERE consumer_id = ?"
            params = (consumer_id,)
        async with _translate(), self._conn.execute(sql + " ORDER BY created_at, key_id", params) as cur:
            rows = await cur.fetchall()
        return [_key_record(r) for r in rows]

    async def page(self, *, consumer_id: str | None = None, consumer_prefix: str | None = None,
                   after: str | None = None, limit: int = 100) -> KeyPage:
        clauses, params = [], []
        if consumer_id is not None:
            clauses.append("consumer_id = ?")
            params.append(consumer_id)
        if consumer_prefix is not None:  # a range, not LIKE: no wildcard in the prefix can widen it
            clauses.append("consumer_id >= ? AND consumer_id < ?")
            params.extend((consumer_prefix, consumer_prefix + "\U0010ffff"))
        if after is not None:
            clauses.append("key_id > ?")
            params.append(after)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        limit = max(1, min(limit, MAX_KEY_PAGE))
        sql = f"SELECT {_KEY_COLUMNS} FROM api_keys{where} ORDER BY key_id LIMIT ?"  # noqa: S608 - constant parts
        async with _translate(), self._conn.execute(sql, (*params, limit + 1)) as cur:
            rows = list(await cur.fetchall())
        keys = [_key_record(r) for r in rows[:limit]]
        return KeyPage(keys, keys[-1].key_id if len(rows) > limit else None)

    async def revoke(self, key_id: str, at: float) -> bool:
        return await self._update_key(
            "UPDATE api_keys SET disabled = 1, revoked_at = COALESCE(revoked_at, ?) WHERE key_id = ?", (at, key_id))

    async def set_disabled(self, key_id: str, disabled: bool) -> bool:
        return await self._update_key(
            "UPDATE api_keys SET disabled = ? WHERE key_id = ? AND revoked_at IS NULL", (int(disabled), key_id))

    async def rotate(self, key_id: str, secret_hash: str, previous_valid_until: float) -> bool:
        return await self._update_key(
            "UPDATE api_keys SET previous_secret_hash = secret_hash, previous_valid_until = ?, secret_hash = ?"
            " WHERE key_id = ? AND revoked_at IS NULL", (previous_valid_until, secret_hash, key_id))

    async def _update_key(self, sql: str, params: tuple[Any, ...]) -> bool:
        async with self._write_lock, _translate():
            cur = await self._conn.execute(sql, params)
            await self._conn.commit()
        return cur.rowcount > 0

    # --- AdminTokenStore --------------------------------------------------------------------

    async def create_admin_token(self, record: AdminTokenRecord) -> None:
        async with self._write_lock, _translate(duplicate=f"duplicate token id {record.token_id!r}"):
            await self._conn.execute(
                f"INSERT INTO admin_tokens ({_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                (record.token_id, record.name, record.role, record.secret_hash, _json_list(record.consumers),
                 record.created_at, record.created_by, record.expires_at, record.revoked_at, record.last_used_at),
            )
            await self._conn.commit()

    async def get_admin_token(self, token_id: str) -> AdminTokenRecord | None:
        async with _translate(), self._conn.execute(
            f"SELECT {_TOKEN_COLUMNS} FROM admin_tokens WHERE token_id = ?", (token_id,)  # noqa: S608 - constant
        ) as cur:
            row = await cur.fetchone()
        return _token_record(row) if row else None

    async def list_admin_tokens(self) -> builtins.list[AdminTokenRecord]:
        async with _translate(), self._conn.execute(
            f"SELECT {_TOKEN_COLUMNS} FROM admin_tokens ORDER BY created_at, token_id"  # noqa: S608 - constant
        ) as cur:
            rows = await cur.fetchall()
        return [_token_record(r) for r in rows]

    async def revoke_admin_token(self, token_id: str, at: float) -> bool:
        async with self._write_lock, _translate():
            cur = await self._conn.execute(
                "UPDATE admin_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL", (at, token_id))
            await self._conn.commit()
        return cur.rowcount > 0

    async def touch_admin_token(self, token_id: str, at: float) -> None:
        async with self._write_lock, _translate():
            await self._conn.execute(
                "UPDATE admin_tokens SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE token_id = ?",
                (at, token_id),
            )
            await self._conn.commit()

    async def touch(self, key_id: str, at: float) -> None:
        async with self._write_lock, _translate():
            await self._conn.execute(
                "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE key_id = ?", (at, key_id)
            )
            await self._conn.commit()

    # --- AuditSink --------------------------------------------------------------------------

    async def write(self, batch: AuditBatch) -> None:
        """Insert a batch in one transaction (``executemany``); a record whose ``id`` is already stored
        is skipped. The record text is the batch's JSON line, not serialised again. Checkpoint lines
        go to ``audit_checkpoints``."""
        rows: builtins.list[tuple[Any, ...]] = []
        checkpoints: builtins.list[tuple[Any, ...]] = []
        for r, line in zip(batch.rows, batch.lines, strict=True):
            if is_checkpoint(r):
                checkpoints.append((str(r["id"]), str(r["chain"]), str(r.get("class") or "request"), int(r["seq"]),
                                    float(r["ts"]), int(bool(r.get("final"))), line.decode()))
            else:
                rows.append(audit_values(r, line))
        if not rows and not checkpoints:
            return
        async with self._write_lock, _translate():
            try:
                if rows:
                    await self._conn.executemany(_AUDIT_INSERT, rows)
                if checkpoints:
                    await self._conn.executemany(
                        "INSERT OR IGNORE INTO audit_checkpoints (id, chain, record_class, seq, ts, final, record)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)", checkpoints,
                    )
                await self._conn.commit()
            except BaseException:
                await self._conn.rollback()
                raise

    async def query_audit(self, query: AuditQuery) -> builtins.list[dict[str, Any]]:
        """Matching records, oldest first, at most ``min(query.limit, MAX_AUDIT_ROWS)``."""
        page = await self.search_audit(AuditSearch(
            since=query.since, until=query.until, consumer_id=query.consumer_id, route=query.route,
            decision=query.decision, limit=query.limit,
        ))
        return page.records

    async def search_audit(self, search: AuditSearch) -> AuditPage:
        clauses, params = [], []
        for column, op, attr in AUDIT_FILTERS:
            value = getattr(search, attr)
            if value is not None:
                clauses.append(f"{column} {op} ?")
                params.append(value)
        if search.cursor is not None:
            ts, record_id = decode_cursor(search.cursor)
            clauses.append("(ts, id) > (?, ?)")
            params.extend((ts, record_id))
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        limit = max(0, min(search.limit, MAX_AUDIT_ROWS))  # SQLite reads a negative LIMIT as "no limit"
        sql = f"SELECT ts, id, record FROM audit{where} ORDER BY ts, id LIMIT ?"  # noqa: S608 - AUDIT_FILTERS
        async with _translate(), self._conn.execute(sql, (*params, limit + 1)) as cur:
            rows = builtins.list(await cur.fetchall())
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = encode_cursor(rows[-1][0], rows[-1][1]) if more and rows else None
        return AuditPage([orjson.loads(r[2]) for r in rows], cursor)

    async def audit_chains(self) -> builtins.list[AuditChainInfo]:
        async with _translate(), self._conn.execute(
            "SELECT chain, MIN(record_class) FROM (SELECT chain, record_class FROM audit_checkpoints"
            " UNION SELECT DISTINCT chain, record_class FROM audit WHERE chain IS NOT NULL)"
            " GROUP BY chain ORDER BY chain"
        ) as cur:
            rows = await cur.fetchall()
        return [AuditChainInfo(r[0], r[1]) for r in rows]

    async def chain_lines(self, chain: str, *, after_seq: int, limit: int) -> builtins.list[ChainLine]:
        async with _translate(), self._conn.execute(
            "SELECT seq, record FROM audit WHERE chain = ? AND seq > ? ORDER BY seq LIMIT ?",
            (chain, after_seq, max(0, limit)),
        ) as cur:
            rows = await cur.fetchall()
        return [ChainLine(r[0], r[1].encode()) for r in rows]

    async def chain_checkpoints(self, chain: str, *, after_seq: int, limit: int) -> builtins.list[dict[str, Any]]:
        async with _translate(), self._conn.execute(
            "SELECT record FROM audit_checkpoints WHERE chain = ? AND seq > ? ORDER BY seq, final LIMIT ?",
            (chain, after_seq, max(0, limit)),
        ) as cur:
            rows = await cur.fetchall()
        return [orjson.loads(r[0]) for r in rows]

    async def expire_chain(self, chain: str, *, through_seq: int, batch_rows: int) -> int:
        deleted = 0
        async with self._write_lock, _translate():
            try:
                await self._conn.execute("BEGIN IMMEDIATE")
                while True:
                    cur = await self._conn.execute(
                        "DELETE FROM audit WHERE rowid IN (SELECT rowid FROM audit WHERE chain = ? AND seq <= ?"
                        " ORDER BY seq LIMIT ?)", (chain, through_seq, max(1, batch_rows)),
                    )
                    deleted += cur.rowcount or 0
                    if (cur.rowcount or 0) < batch_rows:
                        break
                await self._conn.execute(
                    "DELETE FROM audit_checkpoints WHERE chain = ? AND seq < ?", (chain, through_seq)
                )
                await self._conn.commit()
            except BaseException:
                await self._conn.rollback()
                raise
        return deleted

    # --- lifecycle --------------------------------------------------------------------------

    # --- SecretStore -----------------------------------------------------------------------

    async def put_secret(self, record: SecretRecord) -> None:
        async with self._write_lock, _translate():
            await self._conn.execute(
                "INSERT INTO secrets (name, ciphertext, fingerprint, created_at, updated_at, last_used_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET ciphertext = excluded.ciphertext,"
                " fingerprint = excluded.fingerprint, updated_at = excluded.updated_at",
                (record.name, record.ciphertext, record.fingerprint, record.created_at, record.updated_at,
                 record.last_used_at),
            )
            await self._conn.commit()

    async def get_secret(self, name: str) -> SecretRecord | None:
        async with _translate(), self._conn.execute(
            f"SELECT {_SECRET_COLUMNS} FROM secrets WHERE name = ?", (name,)  # noqa: S608 - constant
        ) as cur:
            row = await cur.fetchone()
        return _secret_record(row) if row else None

    async def list_secrets(self) -> builtins.list[SecretRecord]:
        async with _translate(), self._conn.execute(
            f"SELECT {_SECRET_COLUMNS} FROM secrets ORDER BY name"  # noqa: S608 - constant
        ) as cur:
            rows = await cur.fetchall()
        return [_secret_record(r) for r in rows]

    async def delete_secret(self, name: str) -> bool:
        async with self._write_lock, _translate():
            cur = await self._conn.execute("DELETE FROM secrets WHERE name = ?", (name,))
            await self._conn.commit()
            return (cur.rowcount or 0) > 0

    async def touch_secret(self, name: str, at: float) -> None:
        async with self._write_lock, _translate():
            await self._conn.execute(
                "UPDATE secrets SET last_used_at = ? WHERE name = ? AND (last_used_at IS NULL OR last_used_at < ?)",
                (at, name, at),
            )
            await self._conn.commit()

    async def replace_ciphertexts(self, ciphertexts: Mapping[str, bytes], at: float) -> None:
        async with self._write_lock, _translate():
            try:
                await self._conn.execute("BEGIN IMMEDIATE")
                for name, ciphertext in ciphertexts.items():
                    cur = await self._conn.execute(
                        "UPDATE secrets SET ciphertext = ?, updated_at = ? WHERE name = ?", (ciphertext, at, name)
                    )
                    if (cur.rowcount or 0) != 1:
                        raise sqlite3.IntegrityError(f"no secret {name!r}")
                await self._conn.commit()
            except BaseException:
                await self._conn.rollback()
                raise

    # --- SigningKeyStore --------------------------------------------------------------------

    async def create_signing_key(self, record: SigningKeyRecord) -> None:
        async with self._write_lock, _translate(duplicate=f"duplicate signing key id {record.key_id!r}"):
            await self._conn.execute(
                f"INSERT INTO signing_keys ({_SIGNING_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                (record.key_id, record.consumer_id, record.algorithm, record.public_key, record.secret_name,
                 _json_list(record.scopes), record.created_at, record.not_before, record.expires_at,
                 record.revoked_at),
            )
            await self._conn.commit()

    async def get_signing_key(self, key_id: str) -> SigningKeyRecord | None:
        async with _translate(), self._conn.execute(
            f"SELECT {_SIGNING_KEY_COLUMNS} FROM signing_keys WHERE key_id = ?", (key_id,)  # noqa: S608
        ) as cur:
            row = await cur.fetchone()
        return _signing_key_record(row) if row else None

    async def list_signing_keys(self, consumer_id: str | None = None) -> builtins.list[SigningKeyRecord]:
        sql = f"SELECT {_SIGNING_KEY_COLUMNS} FROM signing_keys"  # noqa: S608 - constant
        params: tuple[Any, ...] = ()
        if consumer_id is not None:
            sql, params = sql + " WHERE consumer_id = ?", (consumer_id,)
        async with _translate(), self._conn.execute(sql + " ORDER BY key_id", params) as cur:
            rows = await cur.fetchall()
        return [_signing_key_record(r) for r in rows]

    async def revoke_signing_key(self, key_id: str, at: float) -> bool:
        return await self._update_key(
            "UPDATE signing_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL", (at, key_id))

    async def expire_signing_key(self, key_id: str, at: float) -> bool:
        return await self._update_key(
            "UPDATE signing_keys SET expires_at = MIN(COALESCE(expires_at, ?), ?) WHERE key_id = ?"
            " AND revoked_at IS NULL", (at, at, key_id))

    # --- ControlStore -----------------------------------------------------------------------

    async def add_control(self, record: ControlRecord) -> None:
        async with self._write_lock, _translate(duplicate=f"duplicate control id {record.control_id!r}"):
            await self._conn.execute(
                f"INSERT INTO controls ({_CONTROL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                (record.control_id, record.kind, record.subject_kind, record.subject, record.reason,
                 record.created_at, record.created_by, record.expires_at, record.factor, record.restore_s,
                 record.lifted_at, record.lifted_by),
            )
            await self._conn.commit()

    async def lift_control(self, control_id: str, at: float, by: str) -> bool:
        async with self._write_lock, _translate():
            cur = await self._conn.execute(
                "UPDATE controls SET lifted_at = ?, lifted_by = ? WHERE control_id = ? AND lifted_at IS NULL",
                (at, by, control_id),
            )
            await self._conn.commit()
        return (cur.rowcount or 0) > 0

    async def list_controls(self, *, active_at: float | None = None) -> builtins.list[ControlRecord]:
        sql = f"SELECT {_CONTROL_COLUMNS} FROM controls"  # noqa: S608 - constant
        params: tuple[Any, ...] = ()
        if active_at is not None:
            sql += " WHERE lifted_at IS NULL AND (expires_at IS NULL OR expires_at + restore_s > ?)"
            params = (active_at,)
        async with _translate(), self._conn.execute(
            sql + " ORDER BY created_at, control_id LIMIT ?", (*params, MAX_CONTROLS)
        ) as cur:
            rows = await cur.fetchall()
        return [_control_record(r) for r in rows]

    async def ping(self) -> None:
        async with _translate(), self._conn.execute("SELECT 1") as cur:
            await cur.fetchone()

    async def aclose(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            async with _translate():
                await db.close()


async def schema_version(path: str) -> int:
    """The file's schema version without migrating it (0 for a new or empty file)."""
    return await asyncio.to_thread(_read_version, path)


def _read_version(path: str) -> int:
    if not Path(path).exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)) as db:
            if db.execute("SELECT name FROM sqlite_master WHERE name = 'schema_version'").fetchone() is None:
                return 0
            row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"sqlite: {type(exc).__name__}: {exc}") from exc
    return int(row[0]) if row and row[0] is not None else 0


def _probe(path: str) -> None:
    sqlite3.connect(path, timeout=BUSY_TIMEOUT_S).close()


async def _enable_wal(db: aiosqlite.Connection) -> None:
    async with db.execute("PRAGMA journal_mode=WAL") as cur:
        await cur.fetchall()


async def _migrate(db: aiosqlite.Connection) -> None:
    await db.execute("BEGIN IMMEDIATE")  # one migrator at a time, across processes
    try:
        await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        async with db.execute("SELECT MAX(version) FROM schema_version") as cur:
            row = await cur.fetchone()
        current = row[0] if row and row[0] is not None else 0
        if current > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the database schema is version {current}, newer than this Portcullis knows ({SCHEMA_VERSION});"
                " upgrade Portcullis or use another store"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[version - 1]:
                await db.execute(statement)
            await db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        await db.commit()
    except BaseException:
        await db.rollback()
        raise


def _secret_record(row: Any) -> SecretRecord:
    return SecretRecord(name=row[0], ciphertext=bytes(row[1]), fingerprint=row[2], created_at=row[3],
                        updated_at=row[4], last_used_at=row[5])


def _signing_key_record(row: Any) -> SigningKeyRecord:
    return SigningKeyRecord(
        key_id=row[0], consumer_id=row[1], algorithm=row[2], public_key=row[3], secret_name=row[4],
        scopes=frozenset(orjson.loads(row[5])), created_at=row[6], not_before=row[7], expires_at=row[8],
        revoked_at=row[9],
    )


def _control_record(row: Any) -> ControlRecord:
    return ControlRecord(
        control_id=row[0], kind=row[1], subject_kind=row[2], subject=row[3], reason=row[4], created_at=row[5],
        created_by=row[6], expires_at=row[7], factor=row[8], restore_s=row[9], lifted_at=row[10], lifted_by=row[11],
    )


def _key_record(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=row[0], consumer_id=row[1], secret_hash=row[2], scopes=frozenset(orjson.loads(row[3])),
        created_at=row[4], expires_at=row[5], disabled=bool(row[6]), last_used_at=row[7],
        roles=frozenset(orjson.loads(row[8])), previous_secret_hash=row[9], previous_valid_until=row[10],
        revoked_at=row[11],
    )


def _token_record(row: Any) -> AdminTokenRecord:
    return AdminTokenRecord(
        token_id=row[0], name=row[1], role=row[2], secret_hash=row[3], consumers=frozenset(orjson.loads(row[4])),
        created_at=row[5], created_by=row[6], expires_at=row[7], revoked_at=row[8], last_used_at=row[9],
    )


def _json_list(values: frozenset[str]) -> str:
    return orjson.dumps(sorted(values)).decode()
