"""What crosses the gateway: the upstream request's headers and the response's headers.

Why a module of its own: header hygiene is where proxies get spoofed. Hop-by-hop headers (and any
header a client names in ``Connection``) stop here (RFC 9110 section 7.6.1; the "hop-by-hop abuse"
class, where a client names ``X-Forwarded-For`` or an auth header in ``Connection`` to make a proxy
drop it). Every header the gateway sets for the backend is removed first, so a client cannot send
its own ``X-Consumer-Id`` or ``X-Forwarded-For``.
"""

from __future__ import annotations

from collections.abc import Sequence

from portcullis.http.context import RequestContext
from portcullis.http.headers import GATEWAY_SET_HEADERS, HOP_BY_HOP, connection_tokens

__all__ = ["ForwardHeaders", "response_headers"]


class ForwardHeaders:
    """Builds upstream request headers for one route; constant parts computed once."""

    __slots__ = ("_drop_always", "_forward_identity", "_upstream_host")

    def __init__(self, *, upstream_host: str | None, forward_identity: bool) -> None:
        # None: keep the client's Host (preserve_host)
        self._upstream_host = upstream_host.encode("latin-1") if upstream_host is not None else None
        self._forward_identity = forward_identity
        self._drop_always = HOP_BY_HOP | GATEWAY_SET_HEADERS | {b"host", b"content-length"}

    def build(
        self, ctx: RequestContext, *, peer: str | None, peer_trusted: bool, body_length: int | None
    ) -> list[tuple[bytes, bytes]]:
        """Headers for the upstream. Behind a trusted proxy, ``X-Forwarded-For`` keeps the chain it
        received and appends the peer; otherwise it is exactly the client address."""
        drop = self._drop_always
        named = connection_tokens(ctx.headers)
        if named:
            # A client cannot use Connection to strip headers the gateway relies on being present
            # or absent: those are handled above either way.
            drop = drop | named
        if ctx.strip_request_headers:
            drop = drop | ctx.strip_request_headers
        out: list[tuple[bytes, bytes]] = []
        prior_xff: list[bytes] = []
        for name, value in ctx.headers:
            if name in drop:
                if peer_trusted and name == b"x-forwarded-for":
                    prior_xff.append(value)
                continue
            out.append((name, value))
        host = self._upstream_host if self._upstream_host is not None else (ctx.host or "").encode("latin-1")
        out.append((b"host", host))
        if body_length is not None:
            out.append((b"content-length", b"%d" % body_length))
        if prior_xff:  # behind a trusted proxy: keep its chain and append the peer
            out.append((b"x-forwarded-for", b", ".join([*prior_xff, (peer or ctx.client_ip).encode("latin-1")])))
        else:
            out.append((b"x-forwarded-for", ctx.client_ip.encode()))
        out.append((b"x-forwarded-proto", ctx.scheme.encode()))
        if ctx.host:
            out.append((b"x-forwarded-host", ctx.host.encode("latin-1")))
        out.append((b"x-request-id", ctx.request_id.encode()))
        principal = ctx.principal
        if self._forward_identity and principal is not None:
            out.append((b"x-consumer-id", principal.consumer_id.encode()))
            out.append((b"x-credential-method", principal.method.encode()))
            if principal.scopes:
                out.append((b"x-consumer-scopes", " ".join(sorted(principal.scopes)).encode()))
            if principal.roles:
                out.append((b"x-consumer-roles", " ".join(sorted(principal.roles)).encode()))
            if principal.key_id:
                out.append((b"x-key-id", principal.key_id.encode()))
        return out


# The server adds its own Date, and the gateway its own X-Request-Id: two of either would be ambiguous.
_RESPONSE_DROP = HOP_BY_HOP | {b"date", b"x-request-id"}


def response_headers(upstream: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Upstream response headers minus hop-by-hop ones (and those named in its ``Connection``)."""
    named = connection_tokens(upstream)
    drop = _RESPONSE_DROP | named if named else _RESPONSE_DROP
    return [(k, v) for k, v in upstream if k not in drop]
