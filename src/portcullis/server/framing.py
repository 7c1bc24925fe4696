"""Framing rules for a request head, beyond what llhttp (strict) already refuses, and ``Expect``.

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

The first rule broken names the audit reason, checked in this order: version, ``Host``,
``Transfer-Encoding`` (in HTTP/1.0, with ``Content-Length``, not ``chunked``), ``Content-Length``.
Every refusal here answers 400 and closes the connection.

One copy of the rules for both servers: our connection counts ``Host``, ``Transfer-Encoding`` and
``Content-Length`` while llhttp hands it the fields, and asks ``framing_error`` once the head is
complete (no second pass over the headers on the hot path); the ingress app, which under the
former server (``listen.server: uvicorn``) is the first to see a head, asks ``head_framing_error``
with the scope's header list, which counts the same fields and applies the same rules. So a
request gets the same answer and the same audit reason under either server.

``Expect`` (RFC 9110 section 10.1.1) decides when a client sends its body, so it is read here
too, once per request that has one. The only expectation is ``100-continue``: compared without
regard to case, as a list (several fields are one list, section 5.3; empty members are ignored,
section 5.6.1), each member with its surrounding whitespace trimmed (llhttp leaves trailing
whitespace in a value). Any other member, with parameters (``100-continue; foo=bar``; the
expectation has none) or without (``something``, ``y 100-continue``), is answered 417 before a byte
of the body is read. The section allows that; Apache httpd and Go's net/http do it; nginx ignores
an expectation it does not know and Envoy passes it on, and a backend behind the gateway could then
read it otherwise (J. Kettle, "HTTP/1.1 must die", 2025: Expect-based desync). Having answered the
expectation, our server drops the field from the request it hands on, as Envoy does: the body is
read before dispatch, and a backend that judged the field again could judge it otherwise (aiohttp
answers 417 to ``100-continue, 100-continue``).

What it refuses to do: repair anything. There is no lenient mode; ``Transfer-Encoding`` is
compared as the parser gave it (``chunked`` with trailing whitespace is not ``chunked``, and llhttp
refuses it first).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

__all__ = ["Expectation", "expectation", "framing_error", "head_framing_error"]

_VERSIONS = frozenset({"1.1", "1.0"})
_OWS = b" \t"


class Expectation(Enum):
    """What an ``Expect`` field value asks of the server."""

    NONE = "none"  # only empty list members: nothing is asked
    CONTINUE = "100-continue"  # send 100 (Continue) before reading the body (HTTP/1.1 only)
    UNSUPPORTED = "unsupported"  # answer 417 (Expectation Failed)


def framing_error(
    version: str, host_count: int, te_count: int, te: bytes, cl_count: int, cl: bytes,
) -> str | None:
    """The audit reason for refusing this head's framing, or ``None`` when it is unambiguous.

    ``te`` and ``cl`` are the last ``Transfer-Encoding`` and ``Content-Length`` values; the counts
    say how many fields there were.
    """
    if version not in _VERSIONS:
        # llhttp reads a version-less request line as HTTP/0.9 (and still parses headers after it);
        # another server would read those bytes differently.
        return "http_version"
    if host_count > 1:
        return "duplicate_host"
    if host_count == 0 and version == "1.1":
        return "missing_host"  # RFC 9112 section 3.2: a server MUST answer 400
    if te_count:
        if version == "1.0":
            # RFC 9112 section 6.1: an HTTP/1.0 hop would read the body differently, whatever
            # Content-Length says.
            return "te_in_http10"
        if cl_count:
            return "cl_and_te"
        if te_count > 1 or te.lower() != b"chunked":
            # Chunked not last, or an unknown coding alone (`xchunked`, `identity`): RFC 9112
            # section 6.3 says 400 and close. Chunked after another coding (`gzip, chunked`): section
            # 6.1 suggests 501, but the client's fix is the same. Stacked fields (TE.TE,
            # CVE-2019-18277's obfuscations) are the same list split in two.
            return "te_not_chunked"
    if cl_count and (cl_count > 1 or not cl.isdigit() or len(cl) > 18):
        return "bad_content_length"  # RFC 9112 section 6.3: unrecoverable framing
    return None


def head_framing_error(version: str, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """``framing_error`` for a whole header list (names lowercase, as in an ASGI scope)."""
    host_count = te_count = cl_count = 0
    te = cl = b""
    for name, value in headers:
        if name == b"host":
            host_count += 1
        elif name == b"transfer-encoding":
            te_count += 1
            te = value
        elif name == b"content-length":
            cl_count += 1
            cl = value
    return framing_error(version, host_count, te_count, te, cl_count, cl)


def expectation(value: bytes) -> Expectation:
    """Read ``value``: every ``Expect`` field of a request, joined with commas."""
    asked = Expectation.NONE
    for member in value.split(b","):
        member = member.strip(_OWS)
        if not member:
            continue
        if member.lower() != b"100-continue":
            return Expectation.UNSUPPORTED
        asked = Expectation.CONTINUE
    return asked
