"""Searching and exporting the audit trail on every backend: each filter, cursor pages in (ts, id)
order with no record twice or missed, a cursor refused when altered, exports streamed page by page.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson
import pytest

from portcullis.audit.export import CSV_COLUMNS, export, records
from portcullis.stores.audit_rows import CursorInvalid
from portcullis.stores.base import AuditBatch, AuditSearch, Store


def rec(n: int, ts: float, **fields: Any) -> dict[str, Any]:
    return {"id": f"r{n:03d}", "ts": ts, "request_id": f"req-{n}", "consumer_id": "acme", "key_id": "k1",
            "route": "orders", "path": f"/orders/{n}", "status": 200, "decision": "allowed", "class": "request",
            "egress": None, **fields}


TRAIL = [
    rec(1, 10.0),
    rec(2, 20.0, consumer_id="globex", key_id="k2"),
    rec(3, 30.0, route="billing", status=429, decision="rate_limited:per-consumer"),
    rec(4, 40.0, route="egress", egress={"workflow_id": "wf-1", "execution_id": "ex-1", "user_id": "u-1"}),
    rec(5, 50.0, route="egress", egress={"workflow_id": "wf-2", "execution_id": "ex-2", "user": "u-2"}),
    rec(6, 60.0, **{"class": "security"}, decision="keys.revoke:ok"),
]


@pytest.fixture
async def trail(backend: Store) -> Store:
    await backend.write(AuditBatch.of(TRAIL))
    return backend


async def ids(store: Store, **filters: Any) -> list[str]:
    return [r["id"] for r in (await store.search_audit(AuditSearch(**filters))).records]


@pytest.mark.parametrize(("filters", "expected"), [
    ({"since": 20.0, "until": 50.0}, ["r002", "r003", "r004"]),  # since inclusive, until exclusive
    ({"consumer_id": "globex"}, ["r002"]),
    ({"key_id": "k2"}, ["r002"]),
    ({"route": "billing"}, ["r003"]),
    ({"decision": "rate_limited:per-consumer"}, ["r003"]),
    ({"status": 429}, ["r003"]),
    ({"workflow_id": "wf-1"}, ["r004"]),
    ({"execution_id": "ex-2"}, ["r005"]),
    ({"user_id": "u-1"}, ["r004"]),
    ({"user_id": "u-2"}, ["r005"]),  # the egress field may be called user
    ({"request_id": "req-6"}, ["r006"]),
    ({"record_class": "security"}, ["r006"]),
    ({"route": "egress", "since": 45.0}, ["r005"]),
], ids=["time", "consumer", "key", "route", "decision", "status", "workflow", "execution", "user_id", "user",
        "request", "class", "combined"])
async def test_each_filter_finds_exactly_its_records(trail: Store, filters: dict[str, Any], expected: list[str]) -> None:
    assert await ids(trail, **filters) == expected


async def test_cursor_pages_return_every_record_once_in_time_and_id_order(backend: Store) -> None:
    many = [rec(n, 100.0 + n // 4) for n in range(23)]  # four records share each timestamp
    await backend.write(AuditBatch.of(list(reversed(many))))
    seen: list[str] = []
    cursor = None
    while True:
        page = await backend.search_audit(AuditSearch(limit=5, cursor=cursor))
        seen += [r["id"] for r in page.records]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [r["id"] for r in many]


async def test_the_last_full_page_has_no_next_cursor(trail: Store) -> None:
    page = await trail.search_audit(AuditSearch(limit=6))
    assert len(page.records) == 6 and page.next_cursor is None


@pytest.mark.parametrize("cursor", ["", "not-base64!", "W10", "WyJ4IiwxXQ"], ids=["empty", "garbage", "[]", "[x,1]"])
async def test_a_cursor_the_store_did_not_make_is_refused(trail: Store, cursor: str) -> None:
    with pytest.raises(CursorInvalid):
        await trail.search_audit(AuditSearch(cursor=cursor))


async def test_export_streams_every_match_as_json_lines_in_pages(trail: Store) -> None:
    chunks = [c async for c in export(trail, AuditSearch(route="egress"), fmt="jsonl", page_size=1)]
    assert [orjson.loads(c)["id"] for c in chunks] == ["r004", "r005"]
    assert orjson.loads(chunks[0]) == TRAIL[3]


async def test_export_as_csv_has_a_header_and_one_row_per_record_with_egress_ids(trail: Store) -> None:
    data = b"".join([c async for c in export(trail, AuditSearch(), fmt="csv", page_size=4)]).decode()
    rows = list(csv.DictReader(io.StringIO(data)))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [r["id"] for r in rows] == [r["id"] for r in TRAIL]
    assert (rows[4]["workflow_id"], rows[4]["execution_id"], rows[4]["user_id"]) == ("wf-2", "ex-2", "u-2")
    assert rows[5]["class"] == "security"


async def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_neutralised(backend: Store) -> None:
    # OWASP CSV injection: a client picks its path and user agent
    await backend.write(AuditBatch.of([rec(1, 1.0, path="=HYPERLINK(\"http://evil\")", user_agent="@SUM(A1)")]))
    data = b"".join([c async for c in export(backend, AuditSearch(), fmt="csv")]).decode()
    (row,) = csv.DictReader(io.StringIO(data))
    assert row["path"] == "'=HYPERLINK(\"http://evil\")" and row["user_agent"] == "'@SUM(A1)"


async def test_records_iterates_from_a_given_cursor(trail: Store) -> None:
    first = await trail.search_audit(AuditSearch(limit=2))
    rest = [r["id"] async for r in records(trail, AuditSearch(cursor=first.next_cursor), page_size=2)]
    assert rest == ["r003", "r004", "r005", "r006"]
