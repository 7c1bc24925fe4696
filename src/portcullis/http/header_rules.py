"""``RequestHeaderRules``: which client request headers cross the gateway, for every door.

Why here, below ``ingress`` and ``egress``: the same rules apply whichever door a request uses. An
ingress route forwards to our backend (``ingress/forward.py``), the egress door and the in-process
httpx transport call a third party (``egress/executor.py``); each removes the same headers with
this one loop, and refuses the same ones with this one check. A second copy of the loop is how the
two doors drifted before (the egress executor kept its own, shorter hop-by-hop list).

What crosses: hop-by-hop headers (and any header a client names in ``Connection``) stop here
(RFC 9110 section 7.6.1; the "hop-by-hop abuse" class, where a client names ``X-Forwarded-For`` or
an auth header in ``Connection`` to make a proxy drop it). Every header the gateway sets itself is
removed, so a client cannot send its own ``X-Consumer-Id`` or ``X-Forwarded-For``; so are the
route's removed headers (the default list in ``http/headers.py`` plus the config's), and a request
carrying a refused one is answered 400 before it gets anywhere.

Names are compared folded (lowercase, ``_`` as ``-``: how CGI/WSGI backends read them), so
``X_Consumer_Id`` is removed like ``X-Consumer-Id``. Variants are removed, not refused, by default:
nginx (``underscores_in_headers off``) and gunicorn drop them silently, which keeps clients that
happen to send ``X_Request_Id`` working; ``reject_headers`` makes any name, the gateway's own
included, a loud 400 instead (Envoy's ``headers_with_underscores_action`` offers both).

What it refuses to do: match names with regexes or build sets per request. The rules are compiled
once per config load; the per-request loop does one ``bytes.translate`` and one set lookup per
header (plus a ``startswith`` over a tuple of prefixes). Nor does it read the config model: it
takes anything with the three lists (``HeaderLists``), so ``http`` stays the bottom layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Set
from typing import Protocol

from portcullis.http.headers import (
    FOLD_TABLE,
    GATEWAY_SET_HEADERS,
    HOP_BY_HOP,
    REMOVED_BY_DEFAULT,
    RawHeaders,
    connection_tokens,
    fold_name,
    header_family,
)

__all__ = ["DROP_ALWAYS", "HeaderLists", "RequestHeaderRules"]

# Removed whatever the config says: the gateway sets (or frames) these itself.
DROP_ALWAYS: frozenset[bytes] = HOP_BY_HOP | GATEWAY_SET_HEADERS | {b"host", b"content-length"}


class HeaderLists(Protocol):
    """The header lists of one ``request:`` section (``config.model.RequestConfig`` has them)."""

    @property
    def remove_headers(self) -> Sequence[str]:
        """Folded names (a final ``*`` is a prefix) removed besides the default list."""
        ...

    @property
    def reject_headers(self) -> Sequence[str]:
        """Folded names whose presence refuses the request (400)."""
        ...

    @property
    def keep_headers(self) -> Sequence[str]:
        """Folded names forwarded although an inherited list removes or refuses them."""
        ...


class _NoLists:
    """No configured lists: the default list alone (the egress transport's default)."""

    remove_headers: Sequence[str] = ()
    reject_headers: Sequence[str] = ()
    keep_headers: Sequence[str] = ()


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

    def __init__(self, glob: HeaderLists, route: HeaderLists) -> None:
        """The rules for a route whose ``request`` section is ``route`` under the global ``glob``."""
        defaults = [p for names in REMOVED_BY_DEFAULT.values() for p in names]
        self._inherited = _Names([*defaults, *glob.remove_headers])
        self._keep = _Names([*glob.keep_headers, *route.keep_headers])
        self._own = _Names(route.remove_headers)
        self._inherited_refused = _Names(glob.reject_headers)
        self._route_keep = _Names(route.keep_headers)
        self._own_refused = _Names(route.reject_headers)
        # The hot path: exact names in one set; any prefix hit goes through removes() for keeps.
        self.drop: frozenset[bytes] = DROP_ALWAYS | self._own.exact | frozenset(
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

    @classmethod
    def defaults(cls) -> RequestHeaderRules:
        """The default list and the gateway's own headers, with no configured lists."""
        return cls(_NoLists(), _NoLists())

    def removes(self, folded: bytes) -> bool:
        """Whether a client header with this folded name is removed before forwarding."""
        return (folded in DROP_ALWAYS or self._own.match(folded)
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

    def crossing(self, headers: Sequence[tuple[bytes, bytes]], extra: Set[bytes] = frozenset()) -> RawHeaders:
        """The client headers that cross the gateway, in order: ``headers`` minus what these rules
        remove, minus the headers named in ``Connection``, minus ``extra`` (folded names the caller
        removes for this request, such as the credential header its authentication read)."""
        drop = self.drop
        named = connection_tokens(headers)
        if named:
            # A client cannot use Connection to strip headers the gateway relies on being present
            # or absent: those are set after this either way.
            extra = extra | {fold_name(t) for t in named}
        prefixes, gate = self.prefixes, self.prefix_gate
        removes = self.removes
        out: RawHeaders = []
        for name, value in headers:
            folded = name.translate(FOLD_TABLE)  # fold_name, inlined: this loop runs for every header
            if (folded in drop or folded in extra
                    or (folded.startswith(gate) and folded.startswith(prefixes) and removes(folded))):
                continue
            out.append((name, value))
        return out
