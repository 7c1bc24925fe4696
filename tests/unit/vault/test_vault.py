"""The vault against real stores (a SQLite file, a PostgreSQL schema): encryption at rest, name
binding, rotation, locking."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from tests.pg import PG_URL, pg_admin, upgraded_schema

from portcullis.errors import SecretNotFound, StoreUnavailable, VaultError, VaultLocked
from portcullis.gateway.build import open_vault
from portcullis.stores.postgres import PostgresStore
from portcullis.stores.sqlite import SqliteStore
from portcullis.testing import ManualClock
from portcullis.vault import SECRET_KEY_ENV, MasterKeys, Vault, generate_master_key

TOKEN = "ghp_" + "A1b2C3d4" * 5
OLD, NEW = generate_master_key(), generate_master_key()


Store = SqliteStore | PostgresStore
RawRows = Callable[[], Awaitable[list[tuple[object, ...]]]]


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Store, RawRows]]:
    """A store and a reader of its ``secrets`` rows as they lie in the database."""
    if request.param == "sqlite":
        path = tmp_path / "vault.db"
        sqlite = await SqliteStore.connect(str(path))
        try:
            yield sqlite, lambda: asyncio.to_thread(raw_rows, path)
        finally:
            await sqlite.aclose()
        return
    async with upgraded_schema() as schema:
        pg = await PostgresStore.connect(PG_URL, schema=schema)
        try:
            yield pg, lambda: pg_raw_rows(schema)
        finally:
            await pg.aclose()


@pytest.fixture
def store(backend: tuple[Store, RawRows]) -> Store:
    return backend[0]


def keys(*raw: str) -> MasterKeys:
    return MasterKeys.from_env({SECRET_KEY_ENV: ",".join(raw)})


def raw_rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT * FROM secrets").fetchall()


async def pg_raw_rows(schema: str) -> list[tuple[object, ...]]:
    conn = await pg_admin(server_settings={"search_path": schema})
    try:
        return [tuple(r) for r in await conn.fetch("SELECT * FROM secrets")]
    finally:
        await conn.close()


async def test_a_secret_round_trips_and_is_only_ciphertext_at_rest(backend: tuple[Store, RawRows]) -> None:
    store, read_raw = backend
    clock = ManualClock()
    vault = Vault(store, keys(OLD), clock)
    info = await vault.set("github_token", TOKEN)
    assert info.fingerprint.startswith("fp_") and TOKEN not in info.fingerprint
    clock.advance(5)
    assert await vault.reveal("github_token") == TOKEN
    rows = await read_raw()
    assert len(rows) == 1 and TOKEN.encode() not in b"".join(str(c).encode() for c in rows[0])
    [listed] = await vault.list()
    assert listed.last_used_at == clock.wall()  # every use is recorded
    assert not hasattr(listed, "value")


async def test_a_ciphertext_moved_under_another_name_is_refused(store: Store) -> None:
    vault = Vault(store, keys(OLD), ManualClock())
    await vault.set("stripe_key", "sk_live_secret")
    await vault.set("public_thing", "harmless")
    stripe = await store.get_secret("stripe_key")
    assert stripe is not None
    await store.replace_ciphertexts({"public_thing": stripe.ciphertext}, 1.0)  # an attacker with DB write access
    with pytest.raises(VaultError, match="another name"):
        await vault.reveal("public_thing")


async def test_a_wrong_or_missing_key_locks_the_vault_before_any_traffic(store: Store) -> None:
    await Vault(store, keys(OLD), ManualClock()).set("github_token", TOKEN)
    with pytest.raises(VaultLocked, match="cannot be decrypted"):
        await open_vault(store, ManualClock(), {SECRET_KEY_ENV: NEW})
    with pytest.raises(VaultLocked, match="is not set"):
        await open_vault(store, ManualClock(), {})
    with pytest.raises(VaultLocked, match="Fernet keys"):
        await open_vault(store, ManualClock(), {SECRET_KEY_ENV: "not-a-key"})
    assert await (await open_vault(store, ManualClock(), {SECRET_KEY_ENV: OLD})).unlock() == 1


async def test_an_empty_vault_needs_no_key(store: Store) -> None:
    vault = await open_vault(store, ManualClock(), {})
    assert await vault.list() == []
    with pytest.raises(VaultLocked):
        await vault.set("x", "y")  # but storing one does


async def test_rotation_re_encrypts_everything_under_the_new_key(store: Store) -> None:
    clock = ManualClock()
    await Vault(store, keys(OLD), clock).set("a", "alpha")
    await Vault(store, keys(OLD), clock).set("b", "beta")
    before = {r.name: r.ciphertext for r in await store.list_secrets()}
    assert await Vault(store, keys(NEW, OLD), clock).rotate_master() == 2
    after = {r.name: r.ciphertext for r in await store.list_secrets()}
    assert all(before[n] != after[n] for n in before)
    new_only = Vault(store, keys(NEW), clock)
    assert [await new_only.reveal("a"), await new_only.reveal("b")] == ["alpha", "beta"]
    with pytest.raises(VaultLocked):
        await Vault(store, keys(OLD), clock).reveal("a")


async def test_a_rotation_that_cannot_decrypt_one_secret_changes_nothing(store: Store) -> None:
    clock = ManualClock()
    await Vault(store, keys(OLD), clock).set("a", "alpha")
    await Vault(store, keys(NEW, OLD), clock).set("b", "beta")  # a rotation begun: "b" is under NEW, "a" not yet
    before = await store.list_secrets()
    with pytest.raises(VaultLocked):
        await Vault(store, keys(NEW), clock).rotate_master()  # cannot read "a"
    assert await store.list_secrets() == before


async def test_setting_with_a_key_that_cannot_decrypt_the_stored_secrets_writes_nothing(store: Store) -> None:
    clock = ManualClock()
    await Vault(store, keys(OLD), clock).set("a", "alpha")
    before = await store.list_secrets()
    for name in ("b", "a"):  # neither adding a secret nor replacing the very one it cannot read
        with pytest.raises(VaultLocked, match="cannot decrypt secret 'a' already in the vault, so nothing was written"):
            await Vault(store, keys(NEW), clock).set(name, "beta")
    assert await store.list_secrets() == before
    assert await (await open_vault(store, clock, {SECRET_KEY_ENV: OLD})).reveal("a") == "alpha"


async def test_setting_during_a_rotation_takes_the_new_key_first_and_the_old_one_after(store: Store) -> None:
    clock = ManualClock()
    await Vault(store, keys(OLD), clock).set("a", "alpha")
    await Vault(store, keys(NEW, OLD), clock).set("b", "beta")
    vault = await open_vault(store, clock, {SECRET_KEY_ENV: f"{NEW},{OLD}"})
    assert [await vault.reveal("a"), await vault.reveal("b")] == ["alpha", "beta"]


async def test_replacing_keeps_creation_time_and_changes_the_fingerprint(store: Store) -> None:
    clock = ManualClock()
    vault = Vault(store, keys(OLD), clock)
    first = await vault.set("t", "one")
    clock.advance(60)
    second = await vault.set("t", "two")
    assert second.created_at == first.created_at and second.updated_at == first.updated_at + 60
    assert second.fingerprint != first.fingerprint
    assert (await vault.set("t", "two")).fingerprint == second.fingerprint


@pytest.mark.parametrize(("name", "value"), [("Bad Name", "v"), ("", "v"), ("-x", "v"), ("a" * 65, "v"), ("ok", "")])
async def test_bad_names_and_empty_values_are_refused(store: Store, name: str, value: str) -> None:
    with pytest.raises(VaultError, match=r"secret names|cannot be empty"):
        await Vault(store, keys(OLD), ManualClock()).set(name, value)


async def test_unknown_names_are_not_found(store: Store) -> None:
    vault = Vault(store, keys(OLD), ManualClock())
    with pytest.raises(SecretNotFound):
        await vault.reveal("nope")
    with pytest.raises(SecretNotFound):
        await vault.delete("nope")


async def test_a_revealed_value_is_read_from_the_store_at_most_once_a_second(store: Store) -> None:
    # reveal runs on every egress call: the store read and the last-use write happen once per
    # REVEAL_FRESH_S, not per call; the stored last use is at most that much older than the true one.
    from portcullis.vault.vault import REVEAL_FRESH_S

    clock = ManualClock()
    vault = Vault(store, keys(OLD), clock)
    await vault.set("llm_key", TOKEN)
    assert await vault.reveal("llm_key") == TOKEN
    first_use = clock.wall()
    clock.advance(REVEAL_FRESH_S / 2)
    assert await vault.reveal("llm_key") == TOKEN
    [listed] = await vault.list()
    assert listed.last_used_at == first_use  # the second use was not written
    clock.advance(REVEAL_FRESH_S / 2)
    assert await vault.reveal("llm_key") == TOKEN
    [listed] = await vault.list()
    assert listed.last_used_at == clock.wall()  # a second on: read again, and the use written


async def test_a_change_here_is_seen_at_once_and_one_made_elsewhere_within_a_second(store: Store) -> None:
    from portcullis.vault.vault import REVEAL_FRESH_S

    clock = ManualClock()
    gateway, cli = Vault(store, keys(OLD), clock), Vault(store, keys(OLD), clock)  # two processes' vaults
    await gateway.set("llm_key", "first")
    assert await gateway.reveal("llm_key") == "first"
    await gateway.set("llm_key", "second")
    assert await gateway.reveal("llm_key") == "second"  # its own write: at once
    await cli.set("llm_key", "third")
    assert await gateway.reveal("llm_key") == "second"  # another's: not within the second
    clock.advance(REVEAL_FRESH_S)
    assert await gateway.reveal("llm_key") == "third"
    await cli.delete("llm_key")
    clock.advance(REVEAL_FRESH_S)
    with pytest.raises(SecretNotFound):
        await gateway.reveal("llm_key")
    await gateway.set("llm_key", "fourth")
    assert await gateway.reveal("llm_key") == "fourth"
    await gateway.delete("llm_key")
    with pytest.raises(SecretNotFound):
        await gateway.reveal("llm_key")  # its own delete: at once


class CountingReads:
    """The real store, with its secret reads counted (every other call passes through)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.reads = 0

    async def get_secret(self, name: str) -> object:
        self.reads += 1
        return await self._store.get_secret(name)

    def __getattr__(self, attr: str) -> object:
        return getattr(self._store, attr)


async def test_calls_arriving_while_the_value_is_refreshed_do_not_all_read_the_store(store: Store) -> None:
    # Fifty calls in flight when the second runs out: one store read (and one last-use write),
    # not fifty at once (which, as SQLite writes, stalled a busy egress door for about a second).
    from portcullis.vault.vault import REVEAL_FRESH_S

    clock = ManualClock()
    counted = CountingReads(store)
    vault = Vault(counted, keys(OLD), clock)  # type: ignore[arg-type]
    await vault.set("llm_key", TOKEN)
    assert await vault.reveal("llm_key") == TOKEN
    clock.advance(REVEAL_FRESH_S)
    counted.reads = 0
    assert await asyncio.gather(*(vault.reveal("llm_key") for _ in range(50))) == [TOKEN] * 50
    assert counted.reads == 1


class Outage:
    """The real store, with its secret reads and last-use writes failing as an unreachable one does
    while ``down`` (the PostgreSQL outage itself: tests/integration/test_store_outage.py)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.down = False
        self.reads = 0

    async def get_secret(self, name: str) -> object:
        self.reads += 1
        if self.down:
            raise StoreUnavailable("the store is unreachable")
        return await self._store.get_secret(name)

    async def touch_secret(self, name: str, at: float) -> None:
        if self.down:
            raise StoreUnavailable("the store is unreachable")
        await self._store.touch_secret(name, at)

    def __getattr__(self, attr: str) -> object:
        return getattr(self._store, attr)


async def test_a_secret_read_before_an_outage_is_revealed_until_stale_if_error_runs_out(store: Store) -> None:
    clock = ManualClock()
    outage = Outage(store)
    vault = Vault(outage, keys(OLD), clock, stale_if_error_s=300)  # type: ignore[arg-type]
    served_stale: list[int] = []
    vault.on_served_stale = lambda: served_stale.append(1)
    await vault.set("llm_key", TOKEN)
    await vault.set("never_read", "other")
    assert await vault.reveal("llm_key") == TOKEN  # read at t=0
    outage.down = True
    clock.advance(200)
    assert await vault.reveal("llm_key") == TOKEN  # 200 s after the read: served stale
    with pytest.raises(StoreUnavailable):
        await vault.reveal("never_read")  # nothing to fall back on
    clock.advance(100)
    assert await vault.reveal("llm_key") == TOKEN  # 300 s: the bound itself
    assert len(served_stale) == 2
    clock.advance(1)
    with pytest.raises(StoreUnavailable):
        await vault.reveal("llm_key")  # counted from the read, not from the last stale answer
    outage.down = False
    clock.advance(1)  # a failed read is not retried within the second
    assert await vault.reveal("llm_key") == TOKEN


async def test_during_an_outage_the_store_is_asked_at_most_once_a_second(store: Store) -> None:
    from portcullis.vault.vault import REVEAL_FRESH_S

    clock = ManualClock()
    outage = Outage(store)
    vault = Vault(outage, keys(OLD), clock, stale_if_error_s=300)  # type: ignore[arg-type]
    await vault.set("llm_key", TOKEN)
    await vault.reveal("llm_key")
    outage.down, outage.reads = True, 0
    clock.advance(REVEAL_FRESH_S)
    assert await asyncio.gather(*(vault.reveal("llm_key") for _ in range(50))) == [TOKEN] * 50
    clock.advance(REVEAL_FRESH_S / 2)
    assert await vault.reveal("llm_key") == TOKEN
    assert outage.reads == 1


async def test_without_stale_if_error_an_outage_fails_the_reveal_once_the_second_is_over(store: Store) -> None:
    from portcullis.vault.vault import REVEAL_FRESH_S

    clock = ManualClock()
    outage = Outage(store)
    vault = Vault(outage, keys(OLD), clock)  # type: ignore[arg-type]
    await vault.set("llm_key", TOKEN)
    await vault.reveal("llm_key")
    outage.down = True
    assert await vault.reveal("llm_key") == TOKEN  # within the second: not asked
    clock.advance(REVEAL_FRESH_S)
    with pytest.raises(StoreUnavailable):
        await vault.reveal("llm_key")


async def test_a_last_use_that_cannot_be_written_does_not_fail_the_reveal(store: Store) -> None:
    clock = ManualClock()
    outage = Outage(store)
    vault = Vault(outage, keys(OLD), clock)  # type: ignore[arg-type]
    await vault.set("llm_key", TOKEN)

    async def write_fails(name: str, at: float) -> None:
        raise StoreUnavailable("the store went away after the read")

    outage.touch_secret = write_fails  # type: ignore[method-assign]
    assert await vault.reveal("llm_key") == TOKEN


async def test_a_read_that_failed_is_not_retried_within_the_second(store: Store) -> None:
    # A hanging store costs each read its timeout: calls in the same second fail at once instead.
    from portcullis.vault.vault import REVEAL_FRESH_S

    clock = ManualClock()
    outage = Outage(store)
    vault = Vault(outage, keys(OLD), clock)  # type: ignore[arg-type]
    await vault.set("llm_key", TOKEN)
    outage.down, outage.reads = True, 0
    for _ in range(5):
        with pytest.raises(StoreUnavailable):
            await vault.reveal("llm_key")
    assert outage.reads == 1
    clock.advance(REVEAL_FRESH_S)
    outage.down = False
    assert await vault.reveal("llm_key") == TOKEN
    assert outage.reads == 2
