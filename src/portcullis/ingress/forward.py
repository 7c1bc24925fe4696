"""What crosses the gateway to a backend: the upstream request's headers and the response's headers.

Why a module of its own: header hygiene is where proxies get spoofed. Which client headers cross
is decided by the route's ``RequestHeaderRules`` (``http/header_rules.py``, shared with the egress
door); this module adds what the gateway itself tells the backend: ``Host``, ``Content-Length``,
``X-Forwarded-For`` / ``-Proto`` / ``-Host``, ``X-Request-Id``, the trace context (``traceparent``,
``tracestate``: see ``observability/tracing.py``) and the consumer's identity. Every
one of those is removed from the client's headers first, so a client can never set them.

What it refuses to do: build sets per request. The constant parts are computed once per route.
"""

from __future__ import annotations

from collections.abc import Sequence

from portcullis.http.context import RequestContext
from portcullis.http.header_rules import RequestHeaderRules
from portcullis.http.headers import HOP_BY_HOP, connection_tokens, get_all

__all__ = ["ForwardHeaders", "response_headers"]


class ForwardHeaders:
    """Builds upstream request headers for one route; constant parts computed once."""

    __slots__ = ("_forward_identity", "_upstream_host", "rules")

    def __init__(self, *, upstream_host: str | None, forward_identity: bool, rules: RequestHeaderRules) -> None:
        # None: keep the client's Host (preserve_host)
        self._upstream_host = upstream_host.encode("latin-1") if upstream_host is not None else None
        self._forward_identity = forward_identity
        self.rules = rules

    def build(
        self, ctx: RequestContext, *, peer: str | None, peer_trusted: bool, body_length: int | None,
        trace: Sequence[tuple[bytes, bytes]] = (),
    ) -> list[tuple[bytes, bytes]]:
        """Headers for the upstream. Behind a trusted proxy, ``X-Forwarded-For`` keeps the chain it
        received and appends the peer; otherwise it is exactly the client address. ``trace``: the
        ``traceparent`` / ``tracestate`` the tracer chose (the client's own are removed with the
        other headers the gateway sets)."""
        out = self.rules.crossing(ctx.headers, ctx.strip_request_headers)
        # Only the exact name carries a trusted proxy's chain; `x_forwarded_for` is a variant.
        prior_xff = get_all(ctx.headers, b"x-forwarded-for") if peer_trusted else ()
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
        if trace:
            out.extend(trace)
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
