"""Header facts for a proxy: which headers never cross the gateway, and helpers over raw ASGI pairs.

Why raw pairs: ASGI gives headers as a list of ``(name, value)`` bytes with lowercase names and
duplicates kept. Collapsing them into a dict would hide request-smuggling and spoofing tricks
(two ``Host`` headers, two ``Content-Length`` headers), so this module never does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "GATEWAY_SET_HEADERS",
    "HOP_BY_HOP",
    "RawHeaders",
    "connection_tokens",
    "get_all",
    "get_one",
]

RawHeaders = list[tuple[bytes, bytes]]

# RFC 9110 section 7.6.1 plus the de-facto ones (Keep-Alive, Proxy-Connection) every proxy strips.
HOP_BY_HOP: frozenset[bytes] = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"proxy-authenticate", b"proxy-authorization", b"http2-settings",
})

# Headers the gateway itself sets for the backend. Any client-sent copy is removed first, so a
# client can never impersonate a consumer or forge its address (OWASP API2/API8).
GATEWAY_SET_HEADERS: frozenset[bytes] = frozenset({
    b"x-consumer-id", b"x-consumer-scopes", b"x-consumer-roles", b"x-key-id", b"x-credential-method",
    b"x-request-id", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port",
    b"x-real-ip", b"forwarded", b"true-client-ip", b"x-client-ip", b"x-original-forwarded-for",
    b"x-authenticated-userid", b"x-authenticated-scope",
})


def get_all(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """Every value of ``name`` (lowercase), in order."""
    return [v for k, v in headers if k == name]


def get_one(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of ``name``, or None."""
    for k, v in headers:
        if k == name:
            return v
    return None


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in ``Connection`` (RFC 9110 section 7.6.1): they are hop-by-hop too."""
    tokens: set[bytes] = set()
    for k, v in headers:
        if k == b"connection":
            tokens.update(t.strip().lower() for t in v.split(b",") if t.strip())
    return frozenset(tokens)
