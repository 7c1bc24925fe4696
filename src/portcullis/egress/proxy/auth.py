"""``Proxy-Authorization`` for the proxy door: the API key and the call context, parsed before any lookup.

Two forms, so that ``HTTPS_PROXY=http://user:password@host:port`` works in every client:

- ``Basic base64(user:password)``: the password is the API key; the user name carries the call
  context as ``wf=<workflow id>;ex=<execution id>`` (both required, any order; ids are 1-128 of
  ``A-Z a-z 0-9 . _ -``). In a proxy URL that reads
  ``http://wf=nightly;ex=run-42:pcl_…@127.0.0.1:8081``: clients percent-decode the user info
  before encoding it (curl, requests, httpx, undici), and ``;`` and ``=`` are legal there anyway.
  A colon cannot be part of a Basic user name (RFC 7617 section 2), so an id with ``:`` must use
  the headers below.
- ``Bearer <API key>``: the context then comes from ``X-Workflow-Id`` and ``X-Execution-Id`` on
  the proxy request itself (the ``CONNECT`` or the absolute-form request), as on the HTTP door
  (both required, the door's charset, colons allowed).

With Basic, those headers are ignored: one credential names one context. The user the budgets
charge is never taken from the client: it is the consumer the key belongs to.

What it refuses (raising ``Unauthenticated`` with a fixed audit reason, never echoing input): a
missing field (``proxy_credentials_missing``: the client is told 407 so it can retry with
credentials), several fields, other schemes, bad base64, a user name that is not the context
form, ids outside the charset. Nothing here looks anything up; the key is verified by the backend.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence

from portcullis.egress.proxy.base import ProxyCredentials
from portcullis.errors import Unauthenticated

__all__ = ["CONTEXT_ID", "MISSING", "parse_proxy_authorization"]

CONTEXT_ID = re.compile(r"[A-Za-z0-9._\-]{1,128}")
_HEADER_CONTEXT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")  # the HTTP door's charset (colons allowed)
_MAX_FIELD = 1024  # a key is 60 characters; a context at most ~270: anything longer is not ours
MISSING = "proxy_credentials_missing"


def parse_proxy_authorization(headers: Sequence[tuple[bytes, bytes]]) -> ProxyCredentials:
    """The credentials of one proxy request (names lower-case), or ``Unauthenticated``."""
    values = [v for k, v in headers if k == b"proxy-authorization"]
    if not values:
        raise Unauthenticated(MISSING)
    if len(values) > 1:
        raise Unauthenticated("proxy_credentials_repeated")
    raw = values[0].strip()
    if len(raw) > _MAX_FIELD:
        raise Unauthenticated("proxy_credentials_malformed")
    scheme, _, rest = raw.partition(b" ")
    rest = rest.strip()
    folded = scheme.lower()
    if folded == b"basic":
        return _basic(rest)
    if folded == b"bearer":
        return _bearer(rest, headers)
    raise Unauthenticated("proxy_scheme_unsupported")


def _basic(token: bytes) -> ProxyCredentials:
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise Unauthenticated("proxy_credentials_malformed") from None
    user, sep, password = decoded.partition(":")
    if not sep or not password:
        raise Unauthenticated("proxy_credentials_malformed")
    workflow, execution = _context(user)
    return ProxyCredentials("basic", password, workflow, execution)


def _context(user: str) -> tuple[str, str]:
    found: dict[str, str] = {}
    for item in user.split(";"):
        name, sep, value = item.strip().partition("=")
        if not sep or name not in ("wf", "ex") or name in found or not CONTEXT_ID.fullmatch(value):
            raise Unauthenticated("proxy_context_malformed")
        found[name] = value
    if set(found) != {"wf", "ex"}:
        raise Unauthenticated("proxy_context_malformed")
    return found["wf"], found["ex"]


def _bearer(token: bytes, headers: Sequence[tuple[bytes, bytes]]) -> ProxyCredentials:
    if not token or b" " in token:
        raise Unauthenticated("proxy_credentials_malformed")
    try:
        key = token.decode("ascii")
    except UnicodeDecodeError:
        raise Unauthenticated("proxy_credentials_malformed") from None
    workflow = _header_id(headers, b"x-workflow-id")
    execution = _header_id(headers, b"x-execution-id")
    return ProxyCredentials("bearer", key, workflow, execution)


def _header_id(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str:
    values = [v for k, v in headers if k == name]
    if not values:
        raise Unauthenticated("proxy_context_missing")
    if len(values) > 1:
        raise Unauthenticated("proxy_context_malformed")
    text = values[0].decode("latin-1")
    if not _HEADER_CONTEXT_ID.fullmatch(text):
        raise Unauthenticated("proxy_context_malformed")
    return text
