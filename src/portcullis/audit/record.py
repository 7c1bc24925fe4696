"""One audit record per request: who, what, when, the decision and its reason, timing and bytes.

Why a flat named tuple: records are built on the request path (one per request) and serialised
off it; a tuple is the cheapest immutable value Python builds (a frozen dataclass sets each of
its eighteen fields through ``object.__setattr__``, which showed in profiles), and a flat shape is
cheap for orjson and easy to query in SQLite, PostgreSQL or any log shipper.

``create`` masks every free-text field (``path``, ``query``, ``decision``, ``user_agent`` and the
nested ``egress`` and ``event`` details) through ``audit.redact``; the query should already have been through
``redact_query``, which also knows secret parameter names. The other string fields are the
identifiers an auditor correlates by (``redact.IDENTIFIER_FIELDS``), kept exactly. A test puts a
key into every field, so a new free-text field that ``create`` forgot to mask fails it.
"""

from __future__ import annotations

import functools
import time
from typing import Any, NamedTuple

import orjson

from portcullis.audit.redact import might_hold_a_secret, nested_text, redact_nested, redact_text
from portcullis.clock import Clock
from portcullis.ids import random_hex

__all__ = ["AuditRecord"]


class AuditRecord(NamedTuple):
    id: str
    ts: float  # seconds since the epoch; ``to_dict`` adds ``time``, the same instant in ISO 8601
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
    egress: dict[str, Any] | None = None  # egress door calls: route, host, execution, workflow, attempts…
    # Retention class (``request`` 90 days, ``security`` 1 year, ``compliance`` 7 years, ``debug`` 7
    # days by default); ``event``: what a security event says (actor, role, action, target, outcome).
    record_class: str = "request"
    event: dict[str, Any] | None = None
    # The W3C trace id (32 hex) of the request's trace, when it had one: the link from the audit
    # trail to the spans (the server span carries ``portcullis.request_id`` the other way).
    trace_id: str | None = None

    @classmethod
    def create(
        cls, *, clock: Clock, request_id: str, client_ip: str, consumer_id: str | None, key_id: str | None,
        method: str, route: str | None, path: str, query: str | None, status: int, decision: str,
        latency_ms: float, bytes_in: int, bytes_out: int, upstream_status: int | None, user_agent: str | None,
        egress: dict[str, Any] | None = None, record_class: str = "request", event: dict[str, Any] | None = None,
        trace_id: str | None = None,
    ) -> AuditRecord:
        """A record stamped now, with a fresh unique id (time-ordered prefix, random suffix), masked."""
        ts = clock.wall()
        # One prefilter over every free-text field (no prefix or shape spans the newline); nearly
        # every record holds nothing and is built without a second look.
        joined = f"{path}\n{query or ''}\n{decision}\n{user_agent or ''}"
        if egress is not None:
            joined = f"{joined}\n{nested_text(egress)}"
        if event is not None:
            joined = f"{joined}\n{nested_text(event)}"
        if might_hold_a_secret(joined):
            path, decision = redact_text(path), redact_text(decision)
            query = redact_text(query) if query is not None else None
            user_agent = redact_text(user_agent) if user_agent is not None else None
            egress = redact_nested(egress) if egress is not None else None
            event = redact_nested(event) if event is not None else None
        return cls(
            f"{int(ts * 1000):013x}{random_hex(64)}", ts, request_id, client_ip, consumer_id, key_id, method, route,
            path, query, status, decision, latency_ms, bytes_in, bytes_out, upstream_status, user_agent, egress,
            record_class, event, trace_id,
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as sinks store it, with ``time`` added."""
        return {
            "id": self.id, "time": _iso_millis(self.ts), "ts": self.ts,
            "request_id": self.request_id, "client_ip": self.client_ip, "consumer_id": self.consumer_id,
            "key_id": self.key_id, "method": self.method, "route": self.route, "path": self.path,
            "query": self.query, "status": self.status, "decision": self.decision, "latency_ms": self.latency_ms,
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "upstream_status": self.upstream_status,
            "user_agent": self.user_agent, "egress": self.egress, "class": self.record_class, "event": self.event,
            "trace_id": self.trace_id,
        }

    def to_json_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict())


def _iso_millis(ts: float) -> str:
    """``ts`` as ISO 8601 UTC with milliseconds (``2026-01-02T03:04:05.678Z``), as
    ``datetime.isoformat(timespec="milliseconds")`` writes it, at a quarter of the cost: records
    arrive in time order, so the formatted second is nearly always the cached one."""
    micros = round(ts * 1_000_000)
    second, fraction = divmod(micros, 1_000_000)
    return f"{_iso_second(second)}.{fraction // 1000:03d}Z"


@functools.lru_cache(maxsize=8)
def _iso_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
