"""Reading the stored trail out: every matching record page by page, as JSON lines, CSV rows or OCSF events.

Why pages and an async iterator: an export of a year of records must not hold the table in
memory, on the CLI or in the admin API. ``records`` asks the store for one bounded page at a time
(``AuditStore.search_audit`` with its cursor), so memory stays at one page however large the result.

JSON lines are the stored records re-serialised with orjson, which writes a record read from an
orjson line back byte for byte (same key order, same float text), so each exported record's own
``hash`` still checks. CSV has one fixed column set (``CSV_COLUMNS``); nested details (``egress``,
``event``) are JSON in their cell. Cells that a spreadsheet would run as a formula (starting with
``=``, ``+``, ``-``, ``@``, tab or carriage return: OWASP "CSV injection") get a leading ``'``:
paths and user agents are chosen by clients.

OCSF is ND-JSON, one event per line, from ``audit.ocsf`` (a record may give two events, a checkpoint
none); the events are for a SIEM, and the sealed records stay the evidence.

What it refuses: to decide what may be exported (callers authorise), or to verify (``audit.verify``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any, Literal

import orjson

from portcullis.audit.ocsf import to_ocsf
from portcullis.stores.base import AuditSearch, AuditStore

__all__ = ["CSV_COLUMNS", "ExportFormat", "csv_header", "csv_row", "export", "records"]

ExportFormat = Literal["jsonl", "csv", "ocsf"]

CSV_COLUMNS = (
    "id", "time", "class", "request_id", "client_ip", "consumer_id", "key_id", "method", "route", "path", "query",
    "status", "decision", "latency_ms", "bytes_in", "bytes_out", "upstream_status", "user_agent", "workflow_id",
    "execution_id", "user_id", "egress", "event", "chain", "seq", "hash",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


async def records(store: AuditStore, search: AuditSearch, *, page_size: int = 1000) -> AsyncIterator[dict[str, Any]]:
    """Every record matching ``search`` (its ``cursor`` is where to start), in (ts, id) order."""
    cursor = search.cursor
    while True:
        page = await store.search_audit(replace(search, limit=page_size, cursor=cursor))
        for record in page.records:
            yield record
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


async def export(
    store: AuditStore, search: AuditSearch, *, fmt: ExportFormat, page_size: int = 1000,
) -> AsyncIterator[bytes]:
    """The export as chunks of bytes: a header line first for CSV, then one line per record (OCSF: per event)."""
    if fmt == "csv":
        yield csv_header()
    async for record in records(store, search, page_size=page_size):
        if fmt == "csv":
            yield csv_row(record)
        elif fmt == "ocsf":
            events = to_ocsf(record)
            if events:
                yield b"".join(orjson.dumps(event) + b"\n" for event in events)
        else:
            yield orjson.dumps(record) + b"\n"


def csv_header() -> bytes:
    return _csv_line(CSV_COLUMNS)


def csv_row(record: Mapping[str, Any]) -> bytes:
    raw = record.get("egress")
    egress: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    values = {
        **record, "class": record.get("class", "request"), "workflow_id": egress.get("workflow_id"),
        "execution_id": egress.get("execution_id"), "user_id": egress.get("user_id", egress.get("user")),
    }
    return _csv_line(tuple(_cell(values.get(column)) for column in CSV_COLUMNS))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        value = orjson.dumps(value).decode()
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_line(cells: tuple[str, ...]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(cells)
    return out.getvalue().encode()
