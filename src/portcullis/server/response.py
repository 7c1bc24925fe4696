"""Bytes of an HTTP/1.1 response head, built from precomputed pieces.

Why hand-written: this is the hot path of every response, and a head is a status line plus
``name: value`` lines; the status lines are built once at import so a response costs one join.

What it refuses to do: invent headers. The caller (the request cycle) decides framing
(``content-length``, ``transfer-encoding: chunked``, ``connection: close``) and passes those lines
as ``extra``; header values come from the app, which only ever holds values an llhttp parser or the
gateway itself produced (no CR or LF can be in them).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus

__all__ = ["CHUNK_END", "CONTINUE", "date_line", "encode_head", "status_line"]

_STATUS_LINES: dict[int, bytes] = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode("ascii")) for s in HTTPStatus
}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"  # RFC 9110 section 10.1.1
CHUNK_END = b"0\r\n\r\n"


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


def encode_head(status: int, headers: Iterable[tuple[bytes, bytes]], extra: bytes = b"") -> bytes:
    """Status line, ``headers`` as given, ``extra`` (pre-formatted lines), and the blank line."""
    parts = [status_line(status)]
    for name, value in headers:
        parts.append(b"%s: %s\r\n" % (name, value))
    parts.append(extra)
    parts.append(b"\r\n")
    return b"".join(parts)


_date_second = -1
_date = b""


def date_line() -> bytes:
    """``date: …`` for responses without one (RFC 9110 section 6.6.1), formatted once per second.

    Wall time on purpose: this is a fact on the wire, not an input to any decision.
    """
    global _date_second, _date
    now = time.time()
    second = int(now)
    if second != _date_second:
        _date_second = second
        _date = b"date: %s\r\n" % formatdate(now, usegmt=True).encode("ascii")
    return _date
