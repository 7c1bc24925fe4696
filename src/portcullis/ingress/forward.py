"""What crosses the gateway: the upstream request's headers and the response's headers.

Why a module of its own: header hygiene is where proxies get spoofed. Hop-by-hop headers (and any
header a client names in ``Connection``) stop here (RFC 9110 section 7.6.1; the "hop-by-hop abuse"
class, where a client names ``X-Forwarded-For`` or an auth header in ``Connection`` to make a proxy
drop it). Every header the gateway sets for the backend is removed first, so a client cannot send
its own ``X-Consumer-Id`` or ``X-Forwarded-For``; so are the route's removed headers (the default
list in ``http/headers.py`` plus the config's), and a request carrying a refused one never gets here.

Names are compared folded (lowercase, ``_`` as ``-``: how CGI/WSGI backends read them), so
``X_Consumer_Id`` is removed like ``X-Consumer-Id``. Variants are removed, not refused, by default:
nginx (``underscores_in_headers off``) and gunicorn drop them silently, which keeps clients that
happen to send ``X_Request_Id`` working; ``reject_headers`` makes any name, the gateway's own
included, a loud 400 instead (Envoy's ``headers_with_underscores_action`` offers both).

What it refuses to do: match names with regexes or build sets per request. ``RequestHeaderRules``
is compiled once per config load; the per-request loop does one ``bytes.translate`` and one set
lookup per header (plus a ``startswith`` over a tuple of prefixes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from portcullis.config.model import RequestConfig
from portcullis.http.context import RequestContext
from portcullis.http.headers import (
    FOLD_TABLE,
    GATEWAY_SET_HEADERS,
    HOP_BY_HOP,
    REMOVED_BY_DEFAULT,
    connection_tokens,
    fold_name,
    header_family,
)

__all__ = ["ForwardHeaders", "RequestHeaderRules", "response_headers"]

# Removed whatever the config says: the gateway sets (or frames) these itself.
_DROP_ALWAYS = HOP_BY_HOP | GATEWAY_SET_HEADERS | {b"host", b"content-length"}


class _Names:
    """Folded names and prefixes (config patterns ending in ``*``)."""

    __slots__ = ("exact", "prefixes")

    def __init__(self, patterns: Iterable[str]) -> None:
        exact: set[bytes] = set()
        prefixes: list[bytes] = []
        for pattern in patterns:
            if pattern.endswith("*"):
                prefixes.append(pattern[:-1].encode("latin-1"))
            else:
                exact.add(pattern.encode("latin-1"))
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)

    def match(self, folded: bytes) -> bool:
        return folded in self.exact or folded.startswith(self.prefixes)


def _common_prefix(names: Sequence[bytes]) -> bytes:
    first, last = min(names), max(names)  # the sorted extremes share what all of them share
    size = 0
    while size < len(first) and first[size] == last[size]:
        size += 1
    return first[:size]


class RequestHeaderRules:
    """What one route does with client request headers, compiled once per config load.

    Lists add up, global then route. ``keep_headers`` lifts what was inherited: at the global level
    the default list; on a route also the global ``remove_headers`` and ``reject_headers``. It never
    lifts the gateway's own headers or hop-by-hop ones, and a route's own lists always apply.
    """

    __slots__ = ("_inherited", "_inherited_refused", "_keep", "_own", "_own_refused", "_route_keep",
                 "drop", "prefix_gate", "prefixes", "refused_exact", "refused_prefixes")

    def __init__(self, glob: RequestConfig, route: RequestConfig) -> None:
        """The rules for a route whose ``request`` section is ``route`` under the global ``glob``."""
        defaults = [p for names in REMOVED_BY_DEFAULT.values() for p in names]
        self._inherited = _Names([*defaults, *glob.remove_headers])
        self._keep = _Names([*glob.keep_headers, *route.keep_headers])
        self._own = _Names(route.remove_headers)
        self._inherited_refused = _Names(glob.reject_headers)
        self._route_keep = _Names(route.keep_headers)
        self._own_refused = _Names(route.reject_headers)
        # The hot path: exact names in one set; any prefix hit goes through removes() for keeps.
        self.drop: frozenset[bytes] = _DROP_ALWAYS | self._own.exact | frozenset(
            n for n in self._inherited.exact if not self._keep.match(n))
        self.prefixes: tuple[bytes, ...] = self._own.prefixes + self._inherited.prefixes
        # What every prefix starts with ("x-" for the default list): one cheap startswith per header,
        # the whole tuple only for the few names that pass it.
        # No prefixes: a gate no folded token can start with (names are ASCII tokens).
        self.prefix_gate: bytes = _common_prefix(self.prefixes) if self.prefixes else b"\xff"
        self.refused_exact: dict[bytes, str] = {
            n: header_family(n.decode("latin-1"))
            for n in self._own_refused.exact | self._inherited_refused.exact if self.refuses(n)
        }
        self.refused_prefixes: tuple[bytes, ...] = self._own_refused.prefixes + self._inherited_refused.prefixes

    def removes(self, folded: bytes) -> bool:
        """Whether a client header with this folded name is removed before forwarding."""
        return (folded in _DROP_ALWAYS or self._own.match(folded)
                or (self._inherited.match(folded) and not self._keep.match(folded)))

    def refuses(self, folded: bytes) -> bool:
        """Whether a request carrying a header with this folded name is refused (400)."""
        return self._own_refused.match(folded) or (
            self._inherited_refused.match(folded) and not self._route_keep.match(folded))

    def refusal(self, headers: Sequence[tuple[bytes, bytes]]) -> str | None:
        """The family of the first refused header in ``headers`` (for the audit reason), or None."""
        exact = self.refused_exact
        prefixes = self.refused_prefixes
        if not exact and not prefixes:
            return None
        for name, _ in headers:
            folded = name.translate(FOLD_TABLE)
            family = exact.get(folded)
            if family is not None:
                return family
            if prefixes and folded.startswith(prefixes) and self.refuses(folded):
                return header_family(folded.decode("latin-1"))
        return None


class ForwardHeaders:
    """Builds upstream request headers for one route; constant parts computed once."""

    __slots__ = ("_drop_always", "_forward_identity", "_gate", "_prefixes", "_upstream_host", "rules")

    def __init__(self, *, upstream_host: str | None, forward_identity: bool, rules: RequestHeaderRules) -> None:
        # None: keep the client's Host (preserve_host)
        self._upstream_host = upstream_host.encode("latin-1") if upstream_host is not None else None
        self._forward_identity = forward_identity
        self.rules = rules
        self._drop_always = rules.drop
        self._prefixes = rules.prefixes
        self._gate = rules.prefix_gate

    def build(
        self, ctx: RequestContext, *, peer: str | None, peer_trusted: bool, body_length: int | None
    ) -> list[tuple[bytes, bytes]]:
        """Headers for the upstream. Behind a trusted proxy, ``X-Forwarded-For`` keeps the chain it
        received and appends the peer; otherwise it is exactly the client address."""
        drop = self._drop_always
        # Per-request additions are kept apart: a union with `drop` (80-odd names) would copy it.
        extra: frozenset[bytes] | set[bytes] = ctx.strip_request_headers
        named = connection_tokens(ctx.headers)
        if named:
            # A client cannot use Connection to strip headers the gateway relies on being present
            # or absent: those are set after this loop either way.
            extra = extra | {fold_name(t) for t in named}
        prefixes, gate = self._prefixes, self._gate
        removes = self.rules.removes
        out: list[tuple[bytes, bytes]] = []
        prior_xff: list[bytes] = []
        for name, value in ctx.headers:
            folded = name.translate(FOLD_TABLE)  # fold_name, inlined: this loop runs for every header
            if (folded in drop or folded in extra
                    or (folded.startswith(gate) and folded.startswith(prefixes) and removes(folded))):
                # Only the exact name carries a trusted proxy's chain; `x_forwarded_for` is a variant.
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
