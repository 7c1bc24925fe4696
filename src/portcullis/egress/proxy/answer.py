"""The bytes the proxy door answers with: relayed responses, and every refusal as a problem document.

Why one module: a refusal on the proxy must read like one on every other door (``http/problem.py``
renders it, the request id in the body and in ``x-request-id``, ``Retry-After`` for limits and
open breakers, the budget's name for an exhausted budget) plus what only a proxy says: 407 with
``Proxy-Authenticate`` (RFC 9110 section 11.7.1) for the door's own authentication. The response
framing is the gateway's own (``content-length``, ``connection``): the upstream's framing fields
and hop-by-hop fields are never relayed.

What it refuses to do: put exception text, a guard's reason or anything the client sent into an answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from portcullis.errors import (
    PUBLIC_ERRORS,
    BudgetExhausted,
    ClientError,
    ErrorCode,
    UpstreamError,
    retry_after_of,
)
from portcullis.http.headers import HOP_BY_HOP, connection_tokens
from portcullis.http.problem import render_problem
from portcullis.limiting.headers import retry_after_value
from portcullis.server.response import encode_head

__all__ = ["CONNECTED", "PROXY_CHALLENGE", "Problem", "chunk", "problem_for", "render", "render_problem_bytes",
           "render_stream_head"]

CONNECTED = b"HTTP/1.1 200 Connection established\r\n\r\n"
PROXY_CHALLENGE = (
    (b"proxy-authenticate", b'Basic realm="portcullis egress", charset="UTF-8"'),
    (b"proxy-authenticate", b'Bearer realm="portcullis egress"'),
)
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"}) | HOP_BY_HOP


@dataclass(frozen=True, slots=True)
class Problem:
    """A refusal to render: its code, the extra headers it needs, a fixed detail (budgets only)."""

    code: ErrorCode
    headers: tuple[tuple[bytes, bytes], ...] = ()
    detail: str | None = None

    @property
    def status(self) -> int:
        return PUBLIC_ERRORS[self.code][0]


def problem_for(exc: ClientError | UpstreamError, *, proxy_auth: bool = False) -> Problem:
    """The problem document an error becomes. ``proxy_auth``: an ``Unauthenticated`` from the
    door's own authentication is a 407 with a challenge, not the destination's 401."""
    if proxy_auth:
        missing = exc.reason == "proxy_credentials_missing"
        code = ErrorCode.PROXY_MISSING_CREDENTIALS if missing else ErrorCode.PROXY_INVALID_CREDENTIALS
        return Problem(code, PROXY_CHALLENGE)
    wait = retry_after_of(exc)
    extra = ((b"retry-after", retry_after_value(wait)),) if wait is not None else ()
    return Problem(exc.code, extra, exc.detail if isinstance(exc, BudgetExhausted) else None)


def render_problem_bytes(problem: Problem, request_id: str, *, keep_alive: bool = False,
                         head_only: bool = False) -> bytes:
    status, headers, body = render_problem(problem.code, request_id, extra_headers=problem.headers,
                                           detail=problem.detail)
    headers.append((b"x-request-id", request_id.encode()))
    head = encode_head(status, headers, b"" if keep_alive else b"connection: close\r\n")
    return head if head_only else head + body


def render(status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes, *, request_id: str,
           keep_alive: bool, head_only: bool = False) -> bytes:
    """A relayed response: the upstream's end-to-end fields, our framing."""
    listed = connection_tokens(headers)
    kept = [(k, v) for k, v in headers if k.lower() not in _FRAMING and k.lower() not in listed]
    if not any(k.lower() == b"x-request-id" for k, _ in kept):
        kept.append((b"x-request-id", request_id.encode()))
    no_body = status in (204, 304) or 100 <= status < 200
    extra = b"" if no_body else b"content-length: %d\r\n" % len(body)
    if not keep_alive:
        extra += b"connection: close\r\n"
    head = encode_head(status, kept, extra)
    return head if head_only or no_body else head + body


def render_stream_head(status: int, headers: Sequence[tuple[bytes, bytes]], *, request_id: str, chunked: bool,
                       keep_alive: bool) -> bytes:
    """The head of a streamed answer: chunked (HTTP/1.1), or delimited by the connection's close."""
    listed = connection_tokens(headers)
    kept = [(k, v) for k, v in headers if k.lower() not in _FRAMING and k.lower() not in listed]
    if not any(k.lower() == b"x-request-id" for k, _ in kept):
        kept.append((b"x-request-id", request_id.encode()))
    extra = b"transfer-encoding: chunked\r\n" if chunked else b""
    if not (keep_alive and chunked):
        extra += b"connection: close\r\n"
    return encode_head(status, kept, extra)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 section 7.1)."""
    return b"%x\r\n%s\r\n" % (len(data), data)
