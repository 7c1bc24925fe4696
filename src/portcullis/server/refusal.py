"""The server's own refusals, rendered as RFC 9457 problem documents.

Why: a request the parser, the framing rules, a size limit, a timeout or a connection cap refuses
never reaches the app, yet the client must get the same answer as any other refusal: the problem
document from ``http/problem.py`` (the only error renderer), the request id, the security headers,
``connection: close``; and the gateway must audit and count it. This module builds the ``Refusal``
record, asks the ``RefusalSink`` (the app) to record it and for extra headers, and renders bytes.

What it refuses to do: echo anything the client sent, or let a failing sink stop the refusal.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from portcullis.errors import PUBLIC_ERRORS, ErrorCode
from portcullis.http.problem import render_problem
from portcullis.ids import random_hex
from portcullis.server.base import Headers, Refusal, RefusalSink
from portcullis.server.response import encode_head

__all__ = ["new_refusal", "render_refusal", "report"]

log = logging.getLogger("portcullis.server")

_CLOSE = b"connection: close\r\n"
_RETRY_1S = ((b"retry-after", b"1"),)


def new_refusal(
    code: ErrorCode, reason: str, kind: str, *, peer: str | None, scheme: str, duration_s: float,
    answered: bool = True, method: str = "", target: bytes = b"", headers: Headers | None = None,
    bytes_in: int = 0,
) -> Refusal:
    return Refusal(
        code=code, status=PUBLIC_ERRORS[code][0], reason=reason, kind=kind, request_id=random_hex(128),
        peer=peer, scheme=scheme, duration_s=duration_s, answered=answered, method=method,
        target=target[:1024], headers=headers if headers is not None else [], bytes_in=bytes_in,
    )


def report(sink: RefusalSink | None, refusal: Refusal) -> Sequence[tuple[bytes, bytes]]:
    """Tell the sink; a sink fault is logged, never raised into the connection."""
    if sink is None:
        return ()
    try:
        return sink.refused(refusal)
    except Exception:
        log.exception("refusal sink failed request_id=%s", refusal.request_id)
        return ()


def render_refusal(refusal: Refusal, extra: Sequence[tuple[bytes, bytes]], *, head_only: bool = False) -> bytes:
    """The whole response: problem document, request id, ``extra`` headers, connection close."""
    more = _RETRY_1S if refusal.code is ErrorCode.SERVICE_UNAVAILABLE else ()
    status, headers, body = render_problem(refusal.code, refusal.request_id, extra_headers=more)
    headers.append((b"x-request-id", refusal.request_id.encode()))
    headers.extend(extra)
    head = encode_head(status, headers, _CLOSE)
    return head if head_only else head + body
