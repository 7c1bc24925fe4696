"""Reading a console form: ``application/x-www-form-urlencoded`` only, under a size cap.

Why ``urllib.parse`` rather than python-multipart (what Starlette's ``request.form()`` uses): the
console's forms are a few short fields and never upload a file, so the standard library's parser
under a byte cap is all that is needed, with no dependency to keep patched. Refused, as
``FormRefused``: another content type (multipart included), a body over ``MAX_FORM_BYTES``, more
than ``MAX_FIELDS`` fields, a field given twice (which value would win is a parser's choice; an
attacker's favourite ambiguity), and bytes that are not UTF-8.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qs

from starlette.requests import Request

__all__ = ["MAX_FIELDS", "MAX_FORM_BYTES", "FormRefused", "read_form"]

MAX_FORM_BYTES = 16 * 1024
MAX_FIELDS = 32
_FORM_TYPE = "application/x-www-form-urlencoded"


class FormRefused(ValueError):
    """The body is not a console form this module reads (the message says which rule)."""


async def read_form(request: Request) -> Mapping[str, str]:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != _FORM_TYPE:
        raise FormRefused("not a urlencoded form")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
        raise FormRefused("form too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormRefused("form too large")
    try:
        text = body.decode("utf-8")
        fields = parse_qs(text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS,
                          encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormRefused("malformed form") from exc
    if any(len(values) != 1 for values in fields.values()):
        raise FormRefused("a field is repeated")
    return {name: values[0] for name, values in fields.items()}
