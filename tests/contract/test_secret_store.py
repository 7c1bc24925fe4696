"""The ``SecretStore`` contract, run on every backend: SQLite and PostgreSQL (a schema per test).

The store only ever sees ciphertexts; the vault tests exercise the same methods through ``Vault``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from portcullis.errors import StoreUnavailable
from portcullis.stores.base import SecretRecord, Store
from portcullis.stores.postgres import PostgresStore
from portcullis.stores.sqlite import SqliteStore

SecretBackend = SqliteStore | PostgresStore
Opener = Callable[[], Awaitable[SecretBackend]]


@pytest.fixture
def secrets(backend: Store) -> Store:
    return backend


def secret(name: str, ciphertext: bytes = b"gAAAA\x00\xff-token", *, at: float = 1.0) -> SecretRecord:
    return SecretRecord(name=name, ciphertext=ciphertext, fingerprint=f"fp_{name}", created_at=at, updated_at=at)


async def test_a_secret_reads_back_byte_for_byte(secrets: SecretBackend) -> None:
    await secrets.put_secret(secret("github_token"))
    assert await secrets.get_secret("github_token") == secret("github_token")
    assert await secrets.get_secret("nope") is None


async def test_replacing_a_secret_keeps_its_creation_and_last_use(secrets: SecretBackend) -> None:
    await secrets.put_secret(secret("t", b"one", at=1.0))
    await secrets.touch_secret("t", 5.0)
    await secrets.put_secret(SecretRecord(name="t", ciphertext=b"two", fingerprint="fp_2", created_at=9.0,
                                          updated_at=9.0))
    assert await secrets.get_secret("t") == SecretRecord(name="t", ciphertext=b"two", fingerprint="fp_2",
                                                          created_at=1.0, updated_at=9.0, last_used_at=5.0)


async def test_secrets_list_by_name_bytewise(secrets: SecretBackend) -> None:
    for name in ("b", "a", "B", "_x"):
        await secrets.put_secret(secret(name))
    assert [s.name for s in await secrets.list_secrets()] == ["B", "_x", "a", "b"]


async def test_deleting_says_whether_the_secret_existed(secrets: SecretBackend) -> None:
    await secrets.put_secret(secret("t"))
    assert await secrets.delete_secret("t") is True
    assert await secrets.delete_secret("t") is False
    assert await secrets.get_secret("t") is None


async def test_a_secrets_last_use_only_moves_forward(secrets: SecretBackend) -> None:
    await secrets.put_secret(secret("t"))
    await secrets.touch_secret("t", 50.0)
    await secrets.touch_secret("t", 40.0)
    await secrets.touch_secret("nope", 60.0)  # harmless
    got = await secrets.get_secret("t")
    assert got is not None and got.last_used_at == 50.0


async def test_replacing_ciphertexts_swaps_them_all(secrets: SecretBackend) -> None:
    await secrets.put_secret(secret("a", b"1"))
    await secrets.put_secret(secret("b", b"2"))
    await secrets.replace_ciphertexts({"a": b"1'", "b": b"2'"}, 7.0)
    assert [(s.name, s.ciphertext, s.updated_at) for s in await secrets.list_secrets()] == [
        ("a", b"1'", 7.0), ("b", b"2'", 7.0),
    ]
    await secrets.replace_ciphertexts({}, 8.0)  # nothing to do


async def test_a_swap_naming_a_missing_secret_changes_nothing(secrets: SecretBackend) -> None:
    await secrets.put_secret(secret("a", b"1"))
    await secrets.put_secret(secret("b", b"2"))
    before = await secrets.list_secrets()
    with pytest.raises(StoreUnavailable):
        await secrets.replace_ciphertexts({"a": b"new", "ghost": b"x", "b": b"new"}, 9.0)
    assert await secrets.list_secrets() == before


async def test_injection_shaped_secret_names_round_trip_as_data(secrets: SecretBackend) -> None:
    evil = "x'; DROP TABLE secrets; --"
    await secrets.put_secret(secret(evil))
    await secrets.put_secret(secret("y"))
    assert await secrets.get_secret(evil) == secret(evil)
    await secrets.replace_ciphertexts({evil: b"z"}, 2.0)
    assert [s.name for s in await secrets.list_secrets()] == [evil, "y"]


async def test_secrets_survive_a_reopen(open_backend: Opener) -> None:
    store = await open_backend()
    try:
        await store.put_secret(secret("t"))
    finally:
        await store.aclose()
    store = await open_backend()
    try:
        assert await store.get_secret("t") == secret("t")
    finally:
        await store.aclose()
