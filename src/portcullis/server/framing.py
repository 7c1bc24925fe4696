"""Framing rules for a request head, beyond what llhttp (strict) already refuses.

Why: a request whose body length two servers could read differently is a smuggling vector
(RFC 9112 section 6.3; PortSwigger CL.TE, TE.CL, TE.TE). llhttp refuses bare LF, obs-fold, a space
before the colon and most malformed lengths; these rules close what is left, and they run when
the head is complete, before a byte of the body is read or anything is dispatched:

- ``Transfer-Encoding`` only as exactly ``chunked``: one field, one coding (CVE-2019-18277 style
  obfuscation such as ``xchunked`` or ``chunked, identity`` is refused), never in HTTP/1.0
  (RFC 9112 section 6.1), never together with ``Content-Length``;
- ``Content-Length`` at most once, only digits, at most 18 of them;
- ``Host`` exactly once on HTTP/1.1, at most once on HTTP/1.0 (RFC 9112 section 3.2);
- the version HTTP/1.1 or HTTP/1.0 (llhttp reads a version-less line as HTTP/0.9).

Every refusal here answers 400 and closes the connection.

What it refuses to do: repair anything. There is no lenient mode.
"""

from __future__ import annotations

__all__ = ["framing_error"]

_VERSIONS = frozenset({"1.1", "1.0"})


def framing_error(
    version: str, host_count: int, te_count: int, te: bytes, cl_count: int, cl: bytes,
) -> str | None:
    """The audit reason for refusing this head's framing, or ``None`` when it is unambiguous."""
    if version not in _VERSIONS:
        return "http_version"
    if host_count > 1:
        return "duplicate_host"
    if host_count == 0 and version == "1.1":
        return "missing_host"
    if te_count:
        if version == "1.0":
            return "te_in_http10"
        if cl_count:
            return "cl_and_te"
        if te_count > 1 or te.lower() != b"chunked":
            return "te_not_chunked"
    if cl_count and (cl_count > 1 or not cl.isdigit() or len(cl) > 18):
        return "bad_content_length"
    return None
