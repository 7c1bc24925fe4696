"""Problem documents on the admin listener: the one way an admin error is answered.

Every error the admin API gives is an RFC 9457 document from ``http.problem.render_problem``
(the data path's renderer), carrying the request id the listener gave the call (``X-Request-Id``
on every answer, the same id as the call's security event). ``Problem`` is its schema, so the
OpenAPI document says exactly what an error looks like.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from pydantic import BaseModel

from portcullis.errors import ErrorCode
from portcullis.http.problem import render_problem
from portcullis.ids import random_hex

__all__ = ["REQUEST_ID_SCOPE_KEY", "Problem", "problem", "problem_answer", "request_id_of"]

REQUEST_ID_SCOPE_KEY = "portcullis.request_id"


class Problem(BaseModel):
    """An RFC 9457 problem document as Portcullis writes it."""

    type: str
    title: str
    status: int
    code: str
    request_id: str
    detail: str | None = None


def problem_answer(description: str) -> dict[str, Any]:
    """An OpenAPI ``responses`` entry for a problem document."""
    return {"description": description,
            "content": {"application/problem+json": {"schema": Problem.model_json_schema()}}}


def request_id_of(scope: Any) -> str:
    """The call's request id (made on first use, so every problem and event of one call share it)."""
    rid = scope.get(REQUEST_ID_SCOPE_KEY)
    if not isinstance(rid, str):
        rid = random_hex(128)
        scope[REQUEST_ID_SCOPE_KEY] = rid
    return rid


def problem(code: ErrorCode, request: Request, detail: str | None = None, *,
            retry_after_s: int | None = None, extra: list[tuple[bytes, bytes]] | None = None) -> Response:
    """The problem document for ``code`` (``detail``: a fixed, non-sensitive string)."""
    headers = list(extra or [])
    if retry_after_s is not None:
        headers.append((b"retry-after", str(retry_after_s).encode()))
    status, rendered, body = render_problem(code, request_id_of(request.scope), detail=detail,
                                            extra_headers=headers)
    return Response(body, status_code=status, headers={k.decode(): v.decode() for k, v in rendered})
