"""Key management on every backend: pages with a cursor, disable and enable, rotation's grace, revocation for good."""

from __future__ import annotations

from typing import Any

from portcullis.stores.base import ApiKeyRecord, Store


def record(key_id: str, consumer: str = "acme", **extra: Any) -> ApiKeyRecord:
    return ApiKeyRecord(key_id=key_id, consumer_id=consumer, secret_hash="ab" * 32, scopes=frozenset({"a"}),
                        created_at=1.0, **extra)


async def test_pages_walk_every_key_once_in_key_id_order(backend: Store) -> None:
    for i in range(7):
        await backend.create(record(f"k{i}", consumer="acme" if i % 2 else "beta"))
    seen, after = [], None
    while True:
        page = await backend.page(after=after, limit=3)
        seen += [k.key_id for k in page.keys]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == [f"k{i}" for i in range(7)]


async def test_pages_filter_by_consumer_and_by_a_prefix_that_is_not_a_pattern(backend: Store) -> None:
    await backend.create(record("k1", consumer="acme"))
    await backend.create(record("k2", consumer="acme-eu"))
    await backend.create(record("k3", consumer="beta"))
    await backend.create(record("k4", consumer="a_cme"))
    assert [k.key_id for k in (await backend.page(consumer_id="acme")).keys] == ["k1"]
    assert [k.key_id for k in (await backend.page(consumer_prefix="acme")).keys] == ["k1", "k2"]
    assert (await backend.page(consumer_prefix="a%")).keys == []  # % and _ are characters, not wildcards
    assert [k.key_id for k in (await backend.page(consumer_prefix="a_")).keys] == ["k4"]


async def test_roles_are_stored_with_the_key(backend: Store) -> None:
    await backend.create(record("k1", roles=frozenset({"billing", "support"})))
    got = await backend.get("k1")
    assert got is not None and got.roles == {"billing", "support"}


async def test_a_disabled_key_can_be_enabled_but_a_revoked_one_cannot(backend: Store) -> None:
    await backend.create(record("k1"))
    assert await backend.set_disabled("k1", True)
    assert (got := await backend.get("k1")) is not None and got.state == "disabled"
    assert await backend.set_disabled("k1", False)
    assert (got := await backend.get("k1")) is not None and got.state == "active"
    assert await backend.revoke("k1", 9.0)
    assert not await backend.set_disabled("k1", False)
    assert (got := await backend.get("k1")) is not None and got.state == "revoked"
    assert not await backend.set_disabled("nope", True)


async def test_rotation_keeps_the_former_hash_until_the_grace_ends(backend: Store) -> None:
    await backend.create(record("k1"))
    assert await backend.rotate("k1", "cd" * 32, 500.0)
    got = await backend.get("k1")
    assert got is not None
    assert (got.secret_hash, got.previous_secret_hash, got.previous_valid_until) == ("cd" * 32, "ab" * 32, 500.0)
    assert await backend.revoke("k1", 10.0)
    assert not await backend.rotate("k1", "ef" * 32, 900.0)  # a revoked key gets no new secret
    assert not await backend.rotate("nope", "ef" * 32, 900.0)
