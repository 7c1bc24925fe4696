"""The ``AuditSink`` contract (write batches idempotently) plus ``query_audit``, run on every backend.

SQLite and PostgreSQL (a fresh schema per test, upgraded once, see ``tests/pg.py``). Records are
what ``AuditRecord`` produces: JSON-ready mappings with a unique ``id``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from portcullis.errors import StoreUnavailable
from portcullis.stores.base import AuditBatch, AuditQuery, Store
from portcullis.stores.postgres import PostgresStore
from portcullis.stores.sqlite import MAX_AUDIT_ROWS, SqliteStore

Sink = SqliteStore | PostgresStore
Opener = Callable[[], Awaitable[Sink]]


@pytest.fixture
def audit_sink(backend: Store) -> Store:
    return backend


def row(id_: str, ts: float, *, consumer: str | None = "acme", route: str | None = "orders",
        decision: str = "allowed", status: int = 200, **extra: Any) -> dict[str, Any]:
    return {"id": id_, "ts": ts, "consumer_id": consumer, "route": route, "decision": decision,
            "status": status, "path": "/orders/1", "latency_ms": 1.5, **extra}


async def write(sink: Sink, rows: list[dict[str, Any]]) -> None:
    await sink.write(AuditBatch.of(rows))


async def ids(sink: Sink, query: AuditQuery | None = None) -> list[str]:
    return [r["id"] for r in await sink.query_audit(query or AuditQuery())]


async def test_a_record_reads_back_whole(audit_sink: Sink) -> None:
    rec = row("a1", 1.0, user_agent="curl/8", upstream_status=None, nested={"k": [1, 2]})
    await write(audit_sink, [rec])
    assert await audit_sink.query_audit(AuditQuery()) == [rec]


async def test_writing_the_same_batch_twice_stores_it_once(audit_sink: Sink) -> None:
    batch = [row("a1", 1.0), row("a2", 2.0)]
    await write(audit_sink, batch)
    await write(audit_sink, batch)  # a replay after a failure
    await write(audit_sink, [row("a2", 2.0), row("a3", 3.0)])  # an overlapping replay
    assert await ids(audit_sink) == ["a1", "a2", "a3"]


async def test_a_replay_never_overwrites_the_first_copy(audit_sink: Sink) -> None:
    await write(audit_sink, [row("a1", 1.0, status=200)])
    await write(audit_sink, [row("a1", 1.0, status=500)])
    (only,) = await audit_sink.query_audit(AuditQuery())
    assert only["status"] == 200


async def test_the_same_id_twice_in_one_batch_keeps_the_first(audit_sink: Sink) -> None:
    await write(audit_sink, [row("a1", 1.0, status=200), row("a1", 1.0, status=500)])
    (only,) = await audit_sink.query_audit(AuditQuery())
    assert only["status"] == 200


async def test_an_empty_batch_is_fine(audit_sink: Sink) -> None:
    await write(audit_sink, [])
    assert await ids(audit_sink) == []


async def test_a_large_batch_lands_whole(audit_sink: Sink) -> None:
    await write(audit_sink, [row(f"a{i:05d}", float(i)) for i in range(5000)])
    assert len(await ids(audit_sink, AuditQuery(limit=MAX_AUDIT_ROWS))) == 5000


async def test_a_batch_with_a_bad_record_writes_nothing(audit_sink: Sink) -> None:
    bad = {"id": "a2", "ts": 2.0, "decision": "allowed"}  # no status
    with pytest.raises(ValueError, match="status"):
        await write(audit_sink, [row("a1", 1.0), bad])
    assert await ids(audit_sink) == []


FOUR = [
    row("a1", 1.0),
    row("a2", 2.0, consumer="bob", decision="auth_failed:bad_secret", status=401),
    row("a3", 3.0, route="admin"),
    row("a4", 4.0, consumer=None, route=None, decision="route.not_found", status=404),
]


@pytest.mark.parametrize(("query", "expected"), [
    (AuditQuery(), ["a1", "a2", "a3", "a4"]),
    (AuditQuery(consumer_id="bob"), ["a2"]),
    (AuditQuery(route="admin"), ["a3"]),
    (AuditQuery(decision="auth_failed:bad_secret"), ["a2"]),
    (AuditQuery(since=2.0), ["a2", "a3", "a4"]),
    (AuditQuery(until=3.0), ["a1", "a2"]),
    (AuditQuery(since=2.0, until=4.0), ["a2", "a3"]),
    (AuditQuery(consumer_id="acme", route="orders"), ["a1"]),
    (AuditQuery(limit=2), ["a1", "a2"]),
    (AuditQuery(limit=0), []),
    (AuditQuery(limit=-1), []),
    (AuditQuery(consumer_id="' OR '1'='1"), []),
    (AuditQuery(route="orders'; DROP TABLE audit; --"), []),
    (AuditQuery(decision="allowed\x00"), []),
], ids=["all", "consumer", "route", "decision", "since-inclusive", "until-exclusive", "window", "combined",
        "limit", "limit-zero", "negative-limit-is-not-unlimited", "injection-is-a-value", "statement-injection-is-a-value",
        "nul-matches-nothing"])
async def test_query_audit_filters(audit_sink: Sink, query: AuditQuery, expected: list[str]) -> None:
    await write(audit_sink, FOUR)
    assert await ids(audit_sink, query) == expected


async def test_injection_shaped_values_round_trip_as_data(audit_sink: Sink) -> None:
    evil = "x'); DELETE FROM audit; --"
    rec = row(evil, 1.0, consumer="bob' OR '1'='1", route="$1", decision="a\\b%_")
    await write(audit_sink, [rec, row("a2", 2.0)])
    assert await audit_sink.query_audit(AuditQuery(consumer_id="bob' OR '1'='1")) == [rec]
    assert await ids(audit_sink, AuditQuery(route="$1", decision="a\\b%_")) == [evil]
    assert await ids(audit_sink, AuditQuery(decision="a%")) == []
    assert await ids(audit_sink) == [evil, "a2"]


async def test_ties_in_time_are_ordered_by_id_bytewise(audit_sink: Sink) -> None:
    # PostgreSQL's default collation would sort "B" after "a"; SQLite compares bytes.
    await write(audit_sink, [row(i, 5.0) for i in ("b", "a", "B", "_", "A")])
    assert await ids(audit_sink) == ["A", "B", "_", "a", "b"]


async def test_a_record_with_a_nul_in_a_filter_column_is_kept_whole(audit_sink: Sink) -> None:
    # A JWT ``sub`` may carry U+0000; one unstorable record must not block the audit queue.
    rec = row("a1", 1.0, consumer="bob\x00admin", path="/x\x00y")
    await write(audit_sink, [rec])
    assert await audit_sink.query_audit(AuditQuery(consumer_id="bob\x00admin")) == [rec]


async def test_a_query_never_returns_more_than_the_cap(audit_sink: Sink) -> None:
    await write(audit_sink, [row(f"a{i:05d}", float(i)) for i in range(MAX_AUDIT_ROWS + 5)])
    assert len(await ids(audit_sink, AuditQuery(limit=10 * MAX_AUDIT_ROWS))) == MAX_AUDIT_ROWS


async def test_audit_survives_a_reopen(open_backend: Opener) -> None:
    sink = await open_backend()
    try:
        await write(sink, FOUR)
    finally:
        await sink.aclose()
    sink = await open_backend()
    try:
        assert await ids(sink) == ["a1", "a2", "a3", "a4"]
    finally:
        await sink.aclose()


async def test_writing_to_a_closed_sink_is_unavailable(open_backend: Opener) -> None:
    sink = await open_backend()
    await sink.aclose()
    with pytest.raises(StoreUnavailable):
        await write(sink, [row("a1", 1.0)])
