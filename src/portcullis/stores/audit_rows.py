"""What the SQL stores read out of an audit line: the filter columns, the checkpoint split, the cursor.

Why one module: SQLite and PostgreSQL must index the same facts from the same record (which
consumer, key, route, workflow, execution, user; which chain and where in it) and page the same
way, or a search would answer differently on the two backends. The record itself is stored whole
as the JSON line the writer sealed; these columns are copies for ``WHERE`` and ``ORDER BY``.

Egress details live in ``record["egress"]`` (``workflow_id``, ``execution_id``, ``user_id`` or
``user``); they are lifted into columns here rather than having the egress code write columns.

The cursor is opaque to callers: base64url of ``[ts, id]`` of the last record of a page. Pages are
ordered by ``(ts, id)``, which is unique, so a cursor resumes exactly after that record even when
many records share a timestamp.

What it refuses: SQL text. Column names come only from ``AUDIT_FILTERS``; values are parameters.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

from portcullis.errors import CursorInvalid

__all__ = [
    "AUDIT_FILTERS", "AUDIT_INSERT_COLUMNS", "CHECKPOINT", "AuditRowValues", "CursorInvalid", "audit_values",
    "decode_cursor", "encode_cursor", "is_checkpoint",
]

CHECKPOINT = "checkpoint"

# (column, operator, AuditSearch field): the only text that is put into audit SQL
AUDIT_FILTERS: tuple[tuple[str, str, str], ...] = (
    ("ts", ">=", "since"), ("ts", "<", "until"), ("consumer_id", "=", "consumer_id"), ("key_id", "=", "key_id"),
    ("route", "=", "route"), ("decision", "=", "decision"), ("status", "=", "status"),
    ("workflow_id", "=", "workflow_id"), ("execution_id", "=", "execution_id"), ("user_id", "=", "user_id"),
    ("request_id", "=", "request_id"), ("record_class", "=", "record_class"),
)
AUDIT_INSERT_COLUMNS = (
    "id", "ts", "consumer_id", "route", "decision", "status", "record", "record_class", "key_id", "request_id",
    "workflow_id", "execution_id", "user_id", "chain", "seq",
)


class AuditRowValues(NamedTuple):
    """One audit record as the ``audit`` table's columns, in ``AUDIT_INSERT_COLUMNS`` order."""

    id: str
    ts: float
    consumer_id: str | None
    route: str | None
    decision: str
    status: int
    record: str
    record_class: str
    key_id: str | None
    request_id: str | None
    workflow_id: str | None
    execution_id: str | None
    user_id: str | None
    chain: str | None
    seq: int | None


def is_checkpoint(row: Mapping[str, Any]) -> bool:
    """True for a chain checkpoint (its own table), False for an audit record."""
    return row.get("kind") == CHECKPOINT


def audit_values(record: Mapping[str, Any], line: bytes) -> AuditRowValues:
    """The columns of one record. Raises ``ValueError`` for a record without id, ts, decision or status."""
    missing = [name for name in ("id", "ts", "decision", "status") if record.get(name) is None]
    if missing:
        raise ValueError(f"an audit record needs {', '.join(missing)}")
    egress = record.get("egress")
    egress = egress if isinstance(egress, Mapping) else {}
    seq = record.get("seq")
    return AuditRowValues(
        str(record["id"]), float(record["ts"]), _text(record.get("consumer_id")), _text(record.get("route")),
        str(record["decision"]), int(record["status"]), line.decode(), str(record.get("class") or "request"),
        _text(record.get("key_id")), _text(record.get("request_id")), _text(egress.get("workflow_id")),
        _text(egress.get("execution_id")), _text(egress.get("user_id", egress.get("user"))),
        _text(record.get("chain")), int(seq) if isinstance(seq, int) else None,
    )


def encode_cursor(ts: float, record_id: str) -> str:
    """The cursor that resumes after the record (``ts``, ``record_id``)."""
    return base64.urlsafe_b64encode(orjson.dumps([ts, record_id])).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[float, str]:
    """(ts, id) from a cursor. Raises ``CursorInvalid``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, record_id = orjson.loads(raw)
        if isinstance(ts, bool) or not isinstance(ts, int | float) or not isinstance(record_id, str):
            raise CursorInvalid("not a cursor this store made")
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise CursorInvalid("not a cursor this store made") from None
    return float(ts), record_id


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
