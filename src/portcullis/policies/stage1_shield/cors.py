"""CORS for browser callers: preflights answered locally, response headers for allowed origins.

Why the preflight is answered in the shield stage, before authentication: browsers send the
``OPTIONS`` preflight without credentials (Fetch standard, "CORS-preflight fetch"), so a route that
requires a key would otherwise refuse every browser call with 401. The answer needs no upstream.

Why the gateway is authoritative: an upstream that reflects any ``Origin`` with credentials is the
classic CORS misconfiguration (PortSwigger, "Exploiting CORS misconfigurations"). On a route with
this policy every upstream ``Access-Control-*`` response header is dropped and only the gateway's
are sent.

Origins are compared exactly as origins (RFC 6454): scheme, host and port, with scheme and host
case-insensitive and the default port equal to no port. ``null`` (sandboxed frames, ``file:``,
redirects) is never allowed unless listed literally; ``*`` never echoes and never carries
credentials (the config refuses that pair). ``Vary: Origin`` goes on every response whose CORS
headers depend on the origin, allowed or not, so a shared cache never hands one origin's answer
to another (Fetch standard, "CORS protocol and HTTP caches").

What it refuses to do: answer a disallowed preflight with 204 (it is a 403 ``cors.forbidden``), or
add CORS headers for a disallowed origin on normal responses (browsers then block the read).
Method names are compared case-sensitively (RFC 9110 section 9.1); header names case-insensitively.
"""

from __future__ import annotations

import re

from portcullis.config.model import CorsConfig
from portcullis.config.types import parse_duration
from portcullis.errors import ConfigError, ErrorCode
from portcullis.http.context import RequestContext, ResponseHead
from portcullis.http.headers import get_all, get_one
from portcullis.pipeline.base import Decision, PolicyBase, Reject, Respond, Stage

__all__ = ["CorsPolicy"]

# A serialized origin (RFC 6454 section 6.2): scheme "://" host [":" port], nothing else.
_ORIGIN = re.compile(
    rb"([a-z][a-z0-9+.-]*)://([a-z0-9._~-]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?", re.IGNORECASE
)
_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_PREFLIGHT_REJECTED = Reject(ErrorCode.CORS_FORBIDDEN, "invalid_request:cors_preflight")


def _origin_key(origin: bytes) -> bytes | None:
    """The comparable form of a serialized origin, or None if ``origin`` is not one."""
    match = _ORIGIN.fullmatch(origin)
    if match is None:
        return None
    scheme, host, port = match.group(1).lower(), match.group(2).lower(), match.group(3)
    if port is None:
        return scheme + b"://" + host
    number = int(port)
    if number > 65535:
        return None
    if _DEFAULT_PORTS.get(scheme) == number:
        return scheme + b"://" + host
    return scheme + b"://" + host + b":" + str(number).encode()


class CorsPolicy(PolicyBase):
    """CORS for one route. The sets and the preflight answer are built once, here."""

    name = "respond.cors"
    stage = Stage.SHIELD

    def __init__(self, config: CorsConfig) -> None:
        self._wildcard = config.allow_origins == ["*"]
        self._allow_null = "null" in config.allow_origins
        origins: set[bytes] = set()
        if not self._wildcard:
            for i, origin in enumerate(config.allow_origins):
                if origin == "null":
                    continue
                key = _origin_key(origin.encode())
                if key is None:
                    raise ConfigError("expected scheme://host[:port]", path=f"cors.allow_origins[{i}]")
                origins.add(key)
        self._origins = frozenset(origins)
        self._methods = frozenset(m.encode() for m in config.allow_methods)
        self._headers = frozenset(h.lower().encode() for h in config.allow_headers)
        self._credentials = config.allow_credentials

        common: list[tuple[bytes, bytes]] = []
        if self._credentials:
            common.append((b"access-control-allow-credentials", b"true"))
        self._vary: tuple[tuple[bytes, bytes], ...] = () if self._wildcard else ((b"vary", b"Origin"),)
        # parse_duration: a Duration field left at its default may still hold the text ("10m").
        preflight = [
            *common,
            (b"access-control-allow-methods", ", ".join(config.allow_methods).encode()),
            (b"access-control-max-age", str(int(parse_duration(config.max_age))).encode()),
        ]
        if config.allow_headers:
            preflight.append((b"access-control-allow-headers", ", ".join(config.allow_headers).encode()))
        self._preflight_headers = tuple(preflight)
        actual = list(common)
        if config.expose_headers:
            actual.append((b"access-control-expose-headers", ", ".join(config.expose_headers).encode()))
        self._actual_headers = tuple(actual)

    async def on_request(self, ctx: RequestContext) -> Decision | None:
        if not _is_preflight(ctx):
            return None  # not a preflight (a plain OPTIONS goes to the upstream)
        request_method = get_all(ctx.headers, b"access-control-request-method")
        origins = get_all(ctx.headers, b"origin")
        allow_origin = self._allow_origin(origins)
        if allow_origin is None or len(request_method) != 1 or request_method[0].strip() not in self._methods:
            return _PREFLIGHT_REJECTED
        for value in get_all(ctx.headers, b"access-control-request-headers"):
            for name in value.split(b","):
                name = name.strip().lower()
                if name and name not in self._headers:
                    return _PREFLIGHT_REJECTED
        return Respond(
            204,
            headers=((b"access-control-allow-origin", allow_origin), *self._preflight_headers, *self._vary),
            decision="allowed:cors_preflight",
        )

    def on_response(self, ctx: RequestContext, head: ResponseHead) -> None:
        if _is_preflight(ctx):
            return  # answered or refused by on_request; the answer carries its own headers
        headers = head.headers
        if any(name.startswith(b"access-control-") for name, _ in headers):
            headers[:] = [(k, v) for k, v in headers if not k.startswith(b"access-control-")]
        origins = get_all(ctx.headers, b"origin")
        if origins:
            allow_origin = self._allow_origin(origins)
            if allow_origin is not None:
                headers.append((b"access-control-allow-origin", allow_origin))
                headers.extend(self._actual_headers)
        if self._vary and not _varies_on_origin(headers):
            headers.extend(self._vary)

    def _allow_origin(self, origins: list[bytes]) -> bytes | None:
        """The Access-Control-Allow-Origin value for this request, or None when not allowed."""
        if len(origins) != 1:
            return None  # two Origin headers: ambiguous, never allowed
        origin = origins[0]
        if origin == b"null":
            return origin if self._allow_null else None
        key = _origin_key(origin)
        if key is None:
            return None
        if self._wildcard:
            return b"*"
        return origin if key in self._origins else None


def _is_preflight(ctx: RequestContext) -> bool:
    return (
        ctx.method == "OPTIONS"
        and get_one(ctx.headers, b"origin") is not None
        and get_one(ctx.headers, b"access-control-request-method") is not None
    )


def _varies_on_origin(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"vary":
            for token in value.split(b","):
                token = token.strip().lower()
                if token in (b"origin", b"*"):
                    return True
    return False
