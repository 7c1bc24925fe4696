"""The one canonicalizer for the request target: what is routed is exactly what is forwarded.

Why it exists: path-confusion attacks (CVE-2021-41773 in Apache, Tomcat's ``..;/``, nginx ``alias``
traversal, Envoy's CVE-2019-9901) all live in the gap between how a proxy reads a path and how the
backend behind it reads the same bytes. Portcullis closes the gap by turning the target into one
canonical ASCII string, routing on it, and forwarding that same string, never the original bytes.

The canonical form (RFC 3986):

- percent-escapes of unreserved characters (``ALPHA DIGIT - . _ ~``) are decoded; every other escape
  is kept, with uppercase hex (section 6.2.2.1 and 6.2.2.2);
- printable ASCII that is not allowed raw in a path (``" < > [ ] ^ ` { | }``) is percent-encoded;
- dot segments are removed after that decoding, so ``%2e%2e`` counts as ``..`` (section 5.2.4);
  duplicate slashes are merged first (as nginx's ``merge_slashes``); case is preserved;
- a ``..`` that would climb above the root is refused, not clamped.

What it refuses (``MalformedRequest`` with ``code=REQUEST_TARGET_INVALID``; the ``reason`` goes to
the audit only): ``empty_path``, ``not_origin_form`` (authority-form, asterisk-form, a relative path,
a scheme other than http/https), ``non_ascii``, ``control_char`` (raw or escaped, C0, DEL and C1),
``whitespace``, ``backslash``, ``fragment``, ``invalid_char`` (a ``?`` inside a bare path),
``path_param`` (``;`` raw or as ``%3B``), ``invalid_percent``, ``encoded_slash`` (``%2F``),
``encoded_backslash`` (``%5C``), ``invalid_utf8`` (overlong, surrogate, truncated),
``double_encoding`` (``%25`` followed by two hex digits: ``%252e``), ``above_root``, ``userinfo``,
``invalid_authority``, ``host_mismatch``.

Consequence of refusing ``%25XX``: decoding a canonical path once or twice gives the same string, so
even a backend that double-decodes sees what the gateway routed.

What it does not do: I/O, or any look at the query beyond refusing bytes that cannot be on the wire.
The query is passed through unchanged. It is hand-written rather than built on ``urllib.parse``
because urllib decodes and normalises leniently (it accepts ``%G1``, ignores ``;``, and knows nothing
of overlong UTF-8), which is precisely the ambiguity this module exists to remove.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from portcullis.errors import ErrorCode, MalformedRequest

__all__ = ["CanonicalTarget", "canonicalize_path", "canonicalize_target"]

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX_VALUE = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}
_PCT = tuple(f"%{b:02X}" for b in range(256))

# Fast path: only pchar bytes without '%' and ';', no empty segment except a trailing one, no dot
# segment. Such a path is already canonical. Most API paths take this path.
_CANONICAL_AS_IS = re.compile(rb"(?:/(?!\.\.?(?:/|\Z))[A-Za-z0-9\-._~!$&'()*+,=:@]+)*/?")
_DOUBLE_ENCODED = re.compile(r"%25[0-9A-Fa-f]{2}")
_QUERY_SUSPECT = re.compile(rb"[\x00-\x20\x7f-\xff]")

# Raw bytes refused in a path, with the reason.
_RAW_REFUSED: dict[int, str] = {b: "control_char" for b in (*range(0x20), 0x7F)}
_RAW_REFUSED.update({b: "non_ascii" for b in range(0x80, 0x100)})
_RAW_REFUSED.update({0x20: "whitespace", 0x5C: "backslash", 0x23: "fragment", 0x3B: "path_param",
                     0x3F: "invalid_char"})
# Printable ASCII that RFC 3986 does not allow raw in a path: encoded, not refused (browsers and
# curl send some of them raw).
_RAW_ENCODED = frozenset(b'"<>[]^`{|}')
# Percent-escaped bytes refused in a path, with the reason.
_ESCAPED_REFUSED: dict[int, str] = {b: "control_char" for b in (*range(0x20), 0x7F)}
_ESCAPED_REFUSED.update({0x2F: "encoded_slash", 0x5C: "encoded_backslash", 0x3B: "path_param"})

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class CanonicalTarget:
    """A request target after canonicalization."""

    path: str
    """The canonical path: ASCII, what is both routed and forwarded."""
    query: bytes
    """The raw query (without ``?``), passed through unchanged."""


def _refuse(reason: str) -> MalformedRequest:
    return MalformedRequest(reason, code=ErrorCode.REQUEST_TARGET_INVALID)


def canonicalize_path(raw_path: bytes) -> str:
    """Canonicalize an undecoded path (uvicorn's ``scope["raw_path"]``) or refuse it."""
    if not raw_path:
        raise _refuse("empty_path")
    if raw_path[0] != 0x2F:
        raise _refuse("not_origin_form")
    if _CANONICAL_AS_IS.fullmatch(raw_path):
        return raw_path.decode("ascii")
    path = _remove_dot_segments(_normalize_bytes(raw_path))
    if "%25" in path and _DOUBLE_ENCODED.search(path):
        raise _refuse("double_encoding")
    return path


def canonicalize_target(target: bytes, *, host: str | None) -> CanonicalTarget:
    """Canonicalize a request target as sent on the request line.

    Origin-form (``/p?q``) is the norm. Absolute-form (``http://host/p?q``) is accepted only when its
    authority names the same host and port as ``host`` (the Host header), compared case-insensitively
    with the scheme's default port filled in: RFC 9112 section 3.2.2 lets the target override Host,
    and two names for one request is a routing-confusion vector. Authority-form and asterisk-form are
    refused, as is userinfo in absolute-form.
    """
    if not target:
        raise _refuse("empty_path")
    if b"#" in target:
        raise _refuse("fragment")
    if target[0] != 0x2F:
        target = _strip_absolute_form(target, host)
    path, _, query = target.partition(b"?")
    if query and (bad := _QUERY_SUSPECT.search(query)) is not None:
        raise _refuse(_RAW_REFUSED[bad.group()[0]])
    return CanonicalTarget(path=canonicalize_path(path), query=query)


def _normalize_bytes(raw: bytes) -> str:
    """Refuse bad bytes and escapes, decode unreserved escapes, uppercase the rest."""
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        byte = raw[i]
        if byte != 0x25:
            if (reason := _RAW_REFUSED.get(byte)) is not None:
                raise _refuse(reason)
            out.append(_PCT[byte] if byte in _RAW_ENCODED else chr(byte))
            i += 1
            continue
        value = _escape_at(raw, i)
        if value >= 0x80:
            i = _append_utf8_run(raw, i, out)
            continue
        if (reason := _ESCAPED_REFUSED.get(value)) is not None:
            raise _refuse(reason)
        out.append(chr(value) if value in _UNRESERVED else _PCT[value])
        i += 3
    return "".join(out)


def _escape_at(raw: bytes, i: int) -> int:
    high = _HEX_VALUE.get(raw[i + 1]) if i + 1 < len(raw) else None
    low = _HEX_VALUE.get(raw[i + 2]) if i + 2 < len(raw) else None
    if high is None or low is None:
        raise _refuse("invalid_percent")
    return high * 16 + low


def _append_utf8_run(raw: bytes, i: int, out: list[str]) -> int:
    """Check a run of escaped non-ASCII bytes is well-formed UTF-8; keep it escaped. Returns the end."""
    run = bytearray()
    n = len(raw)
    while i < n and raw[i] == 0x25:
        value = _escape_at(raw, i)
        if value < 0x80:
            break
        run.append(value)
        i += 3
    try:
        # Python's strict decoder refuses overlong forms (%C0%AF), surrogates (%ED%A0%80) and
        # truncated sequences, as RFC 3629 section 3 requires.
        text = run.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse("invalid_utf8") from None
    if any("\x80" <= char <= "\x9f" for char in text):
        raise _refuse("control_char")
    out.extend(_PCT[b] for b in run)
    return i


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 on a path whose empty segments are merged; refuses climbing above root."""
    segments = path.split("/")
    kept: list[str] = []
    for segment in segments[1:]:
        if segment in ("", "."):
            continue
        if segment == "..":
            if not kept:
                raise _refuse("above_root")
            kept.pop()
            continue
        kept.append(segment)
    canonical = "/" + "/".join(kept)
    if kept and segments[-1] in ("", ".", ".."):
        canonical += "/"
    return canonical


def _strip_absolute_form(target: bytes, host: str | None) -> bytes:
    """Check an absolute-form target against the Host header; return its origin-form rest."""
    scheme, sep, rest = target.partition(b"://")
    scheme_name = scheme.decode("ascii", "replace").lower()
    if not sep or scheme_name not in _DEFAULT_PORTS:
        raise _refuse("not_origin_form")
    end = len(rest)
    for delimiter in (b"/", b"?"):
        found = rest.find(delimiter)
        if found != -1 and found < end:
            end = found
    authority, remainder = rest[:end], rest[end:]
    if b"@" in authority:
        raise _refuse("userinfo")
    if not authority.isascii() or _QUERY_SUSPECT.search(authority):
        raise _refuse("invalid_authority")
    named = _host_and_port(authority.decode("ascii"), _DEFAULT_PORTS[scheme_name])
    if named is None:
        raise _refuse("invalid_authority")
    if host is None or _host_and_port(host, _DEFAULT_PORTS[scheme_name]) != named:
        raise _refuse("host_mismatch")
    return remainder if remainder.startswith(b"/") else b"/" + remainder


def _host_and_port(value: str, default_port: int) -> tuple[str, int] | None:
    """``Example.com:80`` → ``("example.com", 80)``; ``[::1]`` keeps its brackets. None if malformed."""
    if value.startswith("["):
        close = value.find("]")
        if close == -1:
            return None
        name, rest = value[: close + 1], value[close + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:]
    else:
        name, _, port = value.partition(":")
        if ":" in port:
            return None
    if not name:
        return None
    if not port:
        return name.lower(), default_port
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        return None
    return name.lower(), int(port)
