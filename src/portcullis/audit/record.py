"""One audit record per request: who, what, when, the decision and its reason, timing and bytes.

Why a flat frozen value: records are built on the request path and serialised off it; a flat
shape is cheap for orjson and easy to query in SQLite, PostgreSQL or any log shipper.
Values arrive already redacted (``audit.redact``); this module does not look at them.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from portcullis.clock import Clock

__all__ = ["AuditRecord"]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: str
    time: str
    ts: float
    request_id: str
    client_ip: str
    consumer_id: str | None
    key_id: str | None
    method: str
    route: str | None
    path: str
    query: str | None
    status: int
    decision: str
    latency_ms: float
    bytes_in: int
    bytes_out: int
    upstream_status: int | None
    user_agent: str | None

    @classmethod
    def create(cls, *, clock: Clock, **fields: Any) -> AuditRecord:
        """A record stamped now, with a fresh unique id (time-ordered prefix, random suffix)."""
        ts = clock.wall()
        when = datetime.datetime.fromtimestamp(ts, datetime.UTC)
        record_id = f"{int(ts * 1000):013x}{os.urandom(8).hex()}"
        return cls(id=record_id, time=when.isoformat(timespec="milliseconds").replace("+00:00", "Z"), ts=ts, **fields)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json_bytes(self) -> bytes:
        return orjson.dumps(self)
