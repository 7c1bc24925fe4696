"""``build_scope``: the ASGI HTTP scope for one parsed request head.

Why apart from the connection: the connection owns bytes, time and parsing; what the app is told
about a request (ASGI 3.0, HTTP scope 2.3) is a pure function of what was parsed and of the socket's
addresses, so it can be read, and tested, in one place.

The target is split by llhttp's URL parser into ``raw_path`` and ``query_string``; ``path`` is
``raw_path`` percent-decoded as ASGI asks (the gateway itself routes on ``raw_path`` through its
canonicalizer, never on ``path``). A target that is not origin-form (absolute, authority or
asterisk form) is also kept whole in ``extensions[RAW_TARGET_KEY]``, so the canonicalizer can
compare its authority with ``Host`` (RFC 9112 section 3.2.2).

What it refuses to do: judge the target. A target llhttp's URL parser cannot split gets an empty
path here, and the gateway's canonicalizer refuses it; this module decides nothing.
"""

from __future__ import annotations

from urllib.parse import unquote

import httptools

from portcullis.server.base import RAW_TARGET_KEY, Headers
from portcullis.server.tls import TLS_EXTENSION_KEY, TLS_PEER_KEY, TlsPeer

__all__ = ["build_scope", "socket_address"]

_ASGI = {"version": "3.0", "spec_version": "2.3"}


def build_scope(
    url: bytes, version: str, method: str, headers: Headers, server: tuple[str, int] | None,
    client: tuple[str, int] | None, scheme: str, tls: TlsPeer | None = None,
) -> dict[str, object]:
    """The scope for a request to ``url`` (the target as sent); ``headers`` is kept, not copied.

    Over TLS, ``extensions`` carries the connection's ``TlsPeer`` and the ASGI TLS extension, both
    built once per connection (``server.tls``)."""
    extensions: dict[str, object] = {}
    if tls is not None:
        extensions[TLS_PEER_KEY] = tls
        extensions[TLS_EXTENSION_KEY] = tls.asgi_extension()
    try:
        parsed = httptools.parse_url(url)
        raw_path: bytes = parsed.path or b""
        query: bytes = parsed.query or b""
    except httptools.HttpParserInvalidURLError:
        raw_path, query = b"", b""
    if url[:1] != b"/":
        extensions[RAW_TARGET_KEY] = {"target": url}  # absolute, authority or asterisk form
    path = raw_path.decode("latin-1")
    return {
        "type": "http", "asgi": _ASGI, "http_version": version, "server": server,
        "client": client, "scheme": scheme, "method": method, "root_path": "",
        "path": unquote(path) if "%" in path else path, "raw_path": raw_path, "query_string": query,
        "headers": headers, "extensions": extensions,
    }


def socket_address(info: object) -> tuple[str, int] | None:
    """``(host, port)`` from a transport's ``peername`` or ``sockname``; ``None`` for a Unix socket or none."""
    if isinstance(info, tuple):
        return str(info[0]), int(info[1])
    return None
