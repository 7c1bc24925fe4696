"""What a SIEM sink sends: a batch as messages (OCSF events or sealed records), and syslog frames of them.

Why pure and apart from the connections: the framing is where an injection would split or forge a
message, so it is one small function with no I/O that the attack tests call with every hostile
value, and both transports (syslog, HTTP) turn a batch into messages the same way.

Messages: ``ocsf`` gives one OCSF event per message (``audit.ocsf``; checkpoints give none);
``native`` gives each sealed line of the batch exactly as the JSONL file holds it, checkpoints
included, so a SIEM can check the hash chain itself.

Syslog (RFC 5424 in RFC 6587 octet-counting framing, the framing RFC 5425 requires over TLS):
``<LEN> <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM MSG``. ``LEN`` is the exact byte
length of what follows the space, so a receiver never looks for a delimiter inside MSG: a newline,
a forged ``123 <14>1 …`` or a NUL inside a record cannot end the frame or start another. MSG is
compact JSON from orjson (valid UTF-8, control characters escaped), marked UTF-8 by the BOM
(RFC 5424 section 6.4). Header fields are restricted to printable ASCII and cut to their RFC
lengths (HOSTNAME 255, APP-NAME 48, PROCID 128, MSGID 32), an empty one becomes ``-``; none of
them comes from a client. No STRUCTURED-DATA is sent (``-``): the event is the JSON.

What it refuses to do: open connections, or decide what happens when a frame cannot be sent.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from portcullis.audit.ocsf import to_ocsf

__all__ = ["PayloadFormat", "SiemMessage", "messages", "octet_frame", "syslog_message"]

PayloadFormat = Literal["ocsf", "native"]

_BOM = b"\xef\xbb\xbf"
# OCSF severity_id → syslog severity (RFC 5424 table 2): informational 6, notice 5, warning 4, error 3, critical 2.
_SYSLOG_SEVERITY = {0: 6, 1: 6, 2: 5, 3: 4, 4: 3, 5: 2, 6: 2, 99: 6}


@dataclass(frozen=True, slots=True)
class SiemMessage:
    """One message for a SIEM: its JSON body, its time, a short type (the syslog MSGID), a syslog severity."""

    body: bytes
    ts: float
    msgid: str
    severity: int


def messages(rows: Sequence[Any], lines: Sequence[bytes], fmt: PayloadFormat) -> list[SiemMessage]:
    """The batch (``rows`` and their sealed ``lines``) as messages in record order."""
    out: list[SiemMessage] = []
    if fmt == "native":
        for row, line in zip(rows, lines, strict=True):
            kind = "checkpoint" if row.get("kind") == "checkpoint" else str(row.get("class") or "request")
            out.append(SiemMessage(line, _ts(row), f"audit-{kind}", 6))
        return out
    for row in rows:
        for event in to_ocsf(row):
            out.append(SiemMessage(orjson.dumps(event), event["time"] / 1000, f"ocsf-{event['class_uid']}",
                                   _SYSLOG_SEVERITY.get(event["severity_id"], 6)))
    return out


def _ts(row: Any) -> float:
    value = row.get("ts")
    return float(value) if isinstance(value, int | float) else 0.0


def syslog_message(message: SiemMessage, *, facility: int, hostname: str, app_name: str, procid: str) -> bytes:
    """One RFC 5424 message (without its frame)."""
    pri = facility * 8 + message.severity
    header = " ".join((
        f"<{pri}>1", _timestamp(message.ts), _field(hostname, 255), _field(app_name, 48), _field(procid, 128),
        _field(message.msgid, 32), "-",
    ))
    return header.encode("ascii") + b" " + _BOM + message.body


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 section 3.4.1 octet counting: ``MSG-LEN SP SYSLOG-MSG``."""
    return b"%d " % len(message) + message


def _field(value: str, limit: int) -> str:
    """An RFC 5424 header field: PRINTUSASCII (33-126) only, at most ``limit`` characters, ``-`` when empty."""
    kept = "".join(c for c in value if "!" <= c <= "~")[:limit]
    return kept or "-"


def _timestamp(ts: float) -> str:
    """RFC 5424 TIMESTAMP in UTC with milliseconds (``2026-01-02T03:04:05.678Z``); ``-`` when unknown."""
    if ts <= 0:
        return "-"
    millis = round(ts * 1000)
    second, fraction = divmod(millis, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{fraction:03d}Z"
