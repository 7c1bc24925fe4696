"""A request head as llhttp reports it, counted against the listener's limits while it arrives.

Why one piece of code: the gateway's server (``server/connection.py``) and the egress proxy door's
reader (``egress/proxy/reader.py``) parse requests with the same parser and must refuse the same
heads the same way: a target over ``max_target_bytes``, a head over ``max_header_bytes``, more
than ``max_header_count`` fields, and the Host, Transfer-Encoding and Content-Length counts that
``framing.framing_error`` judges (request smuggling lives in those counts). Each side used to keep
its own copy of the callbacks; a fix to one would not have reached the other.

``RequestHeadCounts`` is a mixin: llhttp calls ``on_url`` and ``on_header`` on the object it was
given, so the counting must be the protocol object's own methods (no call per field in between).
The class using it gives ``_limits`` and ``_stop`` (how a refusal leaves the parser callback), and
calls ``_start_head`` when a message begins.
"""

from __future__ import annotations

from typing import NoReturn, Protocol

from portcullis.errors import ErrorCode
from portcullis.server.base import Headers
from portcullis.server.framing import framing_error

__all__ = ["HeadLimits", "RequestHeadCounts"]


class HeadLimits(Protocol):
    @property
    def max_target_bytes(self) -> int: ...
    @property
    def max_header_bytes(self) -> int: ...
    @property
    def max_header_count(self) -> int: ...


class RequestHeadCounts:
    """The head's target, fields and framing counts, refused past the limits as they come."""

    _limits: HeadLimits
    _url: bytes
    _headers: Headers
    _header_bytes: int  # names and values with their separators, as received
    _host_count: int
    _te_count: int
    _te: bytes  # the last Transfer-Encoding value
    _cl_count: int
    _cl: bytes  # the last Content-Length value
    _expects: list[bytes] | None  # Expect field values, when there are any

    def _stop(self, code: ErrorCode, reason: str) -> NoReturn:
        raise NotImplementedError

    def _start_head(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._host_count = self._te_count = self._cl_count = 0
        self._te = self._cl = b""
        self._expects = None

    def on_url(self, part: bytes) -> None:
        self._url += part
        if len(self._url) > self._limits.max_target_bytes:
            self._stop(ErrorCode.REQUEST_TARGET_TOO_LONG, "target_too_long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        headers = self._headers
        if len(headers) >= self._limits.max_header_count:
            self._stop(ErrorCode.REQUEST_HEADERS_TOO_LARGE, "too_many_headers")
        if self._header_bytes + len(self._url) > self._limits.max_header_bytes:
            self._stop(ErrorCode.REQUEST_HEADERS_TOO_LARGE, "head_too_large")
        name = name.lower()
        if name == b"host":
            self._host_count += 1
        elif name == b"transfer-encoding":
            self._te_count += 1
            self._te = value
        elif name == b"content-length":
            self._cl_count += 1
            self._cl = value
        elif name == b"expect":
            expects = self._expects
            if expects is None:
                self._expects = [value]
            else:
                expects.append(value)
        headers.append((name, value))  # Expect too, so that it counts against max_header_count

    def _drop_expect(self) -> None:
        """Expect is answered where the head is read (100 Continue or 417), so it is not passed on:
        a backend would judge it again (Envoy drops it too)."""
        if self._expects is not None:
            self._headers = [pair for pair in self._headers if pair[0] != b"expect"]

    def _framing_error(self, version: str) -> str | None:
        """Why the head's framing fields make the request ambiguous (``framing.framing_error``)."""
        return framing_error(version, self._host_count, self._te_count, self._te, self._cl_count, self._cl)

    def _has_body(self) -> bool:
        return self._te_count > 0 or (self._cl_count > 0 and int(self._cl) > 0)

    def _overflow(self, head_bytes: int) -> tuple[ErrorCode, str] | None:
        """The refusal for a head still unfinished after ``head_bytes`` bytes, if that is too many:
        a target that took most of it is too long; otherwise the head is too large."""
        limits = self._limits
        if head_bytes <= limits.max_header_bytes:
            return None
        if not self._headers and len(self._url) > limits.max_target_bytes // 2:
            return ErrorCode.REQUEST_TARGET_TOO_LONG, "target_too_long"
        return ErrorCode.REQUEST_HEADERS_TOO_LARGE, "head_too_large"
