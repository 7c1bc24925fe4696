"""The ``SigningKeyStore`` contract, run on every backend: SQLite and PostgreSQL (a schema per test)."""

from __future__ import annotations

import pytest
from tests.contract.conftest import Opener

from portcullis.stores.base import SigningKeyRecord, Store


def record(key_id: str, consumer: str = "alice", **fields: object) -> SigningKeyRecord:
    values: dict[str, object] = {"algorithm": "hmac-sha256", "created_at": 1.0, "secret_name": f"signing.{key_id}",
                                 "scopes": frozenset({"orders:read"})}
    values.update(fields)
    return SigningKeyRecord(key_id=key_id, consumer_id=consumer, **values)  # type: ignore[arg-type]


async def test_a_signing_key_reads_back_whole_and_survives_a_reopen(open_backend: Opener) -> None:
    store = await open_backend()
    ed = record("sig_bbbbbbbbbbbb", "bob", algorithm="ed25519", secret_name=None, public_key="A" * 43 + "=",
                not_before=2.0, expires_at=9.0)
    await store.create_signing_key(record("sig_aaaaaaaaaaaa"))
    await store.create_signing_key(ed)
    await store.aclose()
    store = await open_backend()
    try:
        assert await store.get_signing_key("sig_aaaaaaaaaaaa") == record("sig_aaaaaaaaaaaa")
        assert await store.get_signing_key("sig_bbbbbbbbbbbb") == ed
        assert await store.get_signing_key("sig_cccccccccccc") is None
    finally:
        await store.aclose()


async def test_a_duplicate_signing_key_id_is_a_value_error(backend: Store) -> None:
    await backend.create_signing_key(record("sig_aaaaaaaaaaaa"))
    with pytest.raises(ValueError, match="duplicate"):
        await backend.create_signing_key(record("sig_aaaaaaaaaaaa", "mallory"))
    got = await backend.get_signing_key("sig_aaaaaaaaaaaa")
    assert got is not None and got.consumer_id == "alice"


async def test_signing_keys_list_in_key_id_order_and_by_consumer(backend: Store) -> None:
    for key_id, consumer in (("sig_cccccccccccc", "alice"), ("sig_aaaaaaaaaaaa", "bob"), ("sig_bbbbbbbbbbbb", "alice")):
        await backend.create_signing_key(record(key_id, consumer))
    assert [k.key_id for k in await backend.list_signing_keys()] == [
        "sig_aaaaaaaaaaaa", "sig_bbbbbbbbbbbb", "sig_cccccccccccc"]
    assert [k.key_id for k in await backend.list_signing_keys("alice")] == ["sig_bbbbbbbbbbbb", "sig_cccccccccccc"]
    assert await backend.list_signing_keys("nobody") == []


async def test_a_signing_key_is_revoked_once_and_for_good(backend: Store) -> None:
    await backend.create_signing_key(record("sig_aaaaaaaaaaaa"))
    assert await backend.revoke_signing_key("sig_aaaaaaaaaaaa", 5.0)
    assert not await backend.revoke_signing_key("sig_aaaaaaaaaaaa", 6.0)
    assert not await backend.revoke_signing_key("sig_nonexistent0", 6.0)
    got = await backend.get_signing_key("sig_aaaaaaaaaaaa")
    assert got is not None and got.revoked_at == 5.0 and got.state(5.0) == "revoked"
    assert not await backend.expire_signing_key("sig_aaaaaaaaaaaa", 10.0)


async def test_an_overlap_only_ever_brings_a_signing_key_s_expiry_closer(backend: Store) -> None:
    await backend.create_signing_key(record("sig_aaaaaaaaaaaa"))
    await backend.create_signing_key(record("sig_bbbbbbbbbbbb", expires_at=50.0))
    assert await backend.expire_signing_key("sig_aaaaaaaaaaaa", 100.0)
    assert await backend.expire_signing_key("sig_bbbbbbbbbbbb", 100.0)
    a, b = await backend.get_signing_key("sig_aaaaaaaaaaaa"), await backend.get_signing_key("sig_bbbbbbbbbbbb")
    assert a is not None and a.expires_at == 100.0 and a.state(99.0) == "active" and a.state(100.0) == "expired"
    assert b is not None and b.expires_at == 50.0
