"""The only error renderer: a ``Reject`` or error code becomes an RFC 9457 problem document.

Why one renderer: every gateway-made error must look the same and carry nothing internal.
The body has ``type``, ``title``, ``status``, ``code`` and ``request_id``; the title comes from the
fixed ``PUBLIC_ERRORS`` table, never from an exception or a ``reason``.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from portcullis.errors import PUBLIC_ERRORS, ErrorCode

__all__ = ["PROBLEM_CONTENT_TYPE", "TYPE_BASE", "render_problem"]

PROBLEM_CONTENT_TYPE = b"application/problem+json"
TYPE_BASE = "https://portcullis.dev/errors/"


def render_problem(
    code: ErrorCode,
    request_id: str,
    *,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
    detail: str | None = None,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body for ``code``.

    ``detail`` is only ever a fixed, non-sensitive string chosen by gateway code (e.g. which budget
    ran out); never exception text.
    """
    status, title = PUBLIC_ERRORS[code]
    doc: dict[str, object] = {
        "type": TYPE_BASE + code.value,
        "title": title,
        "status": status,
        "code": code.value,
        "request_id": request_id,
    }
    if detail is not None:
        doc["detail"] = detail
    body = orjson.dumps(doc)
    headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *extra_headers,
    ]
    return status, headers, body
