"""Admin tokens on every backend: stored field for field, revoked once, last use only forward."""

from __future__ import annotations

import pytest

from portcullis.stores.base import AdminTokenRecord, Store


def token(token_id: str = "t1", **extra: object) -> AdminTokenRecord:
    fields: dict[str, object] = {"name": "ops laptop", "role": "admin", "secret_hash": "ab" * 32,
                                 "created_at": 1.0, "created_by": "cli:root"}
    fields.update(extra)
    return AdminTokenRecord(token_id=token_id, **fields)  # type: ignore[arg-type]


async def test_a_token_reads_back_field_for_field(backend: Store) -> None:
    rec = token(consumers=frozenset({"acme", "beta"}), expires_at=99.5)
    await backend.create_admin_token(rec)
    assert await backend.get_admin_token("t1") == rec
    assert await backend.get_admin_token("nope") is None


async def test_a_duplicate_token_id_is_refused(backend: Store) -> None:
    await backend.create_admin_token(token())
    with pytest.raises(ValueError, match="duplicate"):
        await backend.create_admin_token(token(name="other"))


async def test_revoking_sets_the_time_once(backend: Store) -> None:
    await backend.create_admin_token(token())
    assert await backend.revoke_admin_token("t1", 5.0)
    assert not await backend.revoke_admin_token("t1", 6.0)
    got = await backend.get_admin_token("t1")
    assert got is not None and got.revoked_at == 5.0
    assert not await backend.revoke_admin_token("nope", 1.0)


async def test_tokens_list_oldest_first_and_last_use_only_moves_forward(backend: Store) -> None:
    await backend.create_admin_token(token("t2", created_at=2.0))
    await backend.create_admin_token(token("t1", created_at=1.0))
    await backend.touch_admin_token("t1", 50.0)
    await backend.touch_admin_token("t1", 40.0)
    listed = await backend.list_admin_tokens()
    assert [t.token_id for t in listed] == ["t1", "t2"]
    assert listed[0].last_used_at == 50.0
