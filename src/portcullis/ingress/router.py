"""The compiled route table: (Host, method, canonical path) → route and path parameters.

Why: routing decides which policies run, so it must be unambiguous and must see the same path that
is forwarded. It takes only canonical paths (``http/target.py``) and is compiled once per config
load; a request costs one split, one dict lookup and a few tuple comparisons.

Templates: literal segments; ``{name}`` is exactly one non-empty segment; a final ``{name:path}`` is
the rest, one or more segments (it may contain ``/``, and it never matches an empty rest, so
``/files/{rest:path}`` does not match ``/files/``). A trailing slash is significant: ``/a/`` and
``/a`` are different paths and match different templates, as they may be different resources on the
upstream. Literal segments are compared in canonical form (``%7e`` in a template is ``~``).

Precedence is most specific first, decided at the first segment where two templates differ: literal
beats ``{x}``, which beats ``{x:path}``; templates equally specific keep config order. The first
route in that order whose host and method match wins. When routes match the host and path but none
allows the method, the result is ``method_not_allowed`` with every method they allow; a route that
allows GET also allows HEAD; a route with ``cors`` also allows OPTIONS (its preflight).

Hosts: an empty ``hosts`` list means any host; otherwise the Host header, without its port and one
trailing dot, must equal one of them case-insensitively. A request without Host matches only
routes without ``hosts``.

What it refuses to do: look at the query, decode anything but parameter values, or guess (no
trailing-slash redirects, no case folding of paths).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal
from urllib.parse import unquote

from portcullis.config.model import RouteConfig
from portcullis.errors import ClientError, ConfigError
from portcullis.http.target import canonicalize_path

__all__ = ["RouteMatch", "RouteMiss", "Router"]


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """The route a request goes to, with its path parameters percent-decoded (UTF-8)."""

    route: RouteConfig
    params: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class RouteMiss:
    """No route: ``not_found`` (404) or ``method_not_allowed`` (405, ``allowed`` for the Allow header)."""

    kind: Literal["not_found", "method_not_allowed"]
    allowed: tuple[str, ...] = ()


_NOT_FOUND = RouteMiss("not_found")


class _Kind(IntEnum):
    """Segment kinds, in precedence order."""

    LITERAL = 0
    PARAM = 1
    REST = 2


@dataclass(frozen=True, slots=True)
class _Segment:
    kind: _Kind
    value: str  # the canonical literal, or the parameter name


@dataclass(frozen=True, slots=True)
class _CompiledRoute:
    route: RouteConfig
    segments: tuple[_Segment, ...]
    hosts: frozenset[str]  # empty: any host
    methods: frozenset[str]  # empty: any method; HEAD added when GET is allowed
    specificity: tuple[int, ...]

    def match_path(self, parts: list[str]) -> dict[str, str] | None:
        params: dict[str, str] = {}
        count = len(parts)
        for index, segment in enumerate(self.segments):
            if segment.kind is _Kind.REST:
                rest = "/".join(parts[index:])
                if not rest:
                    return None
                params[segment.value] = unquote(rest)
                return params
            if index >= count:
                return None
            part = parts[index]
            if segment.kind is _Kind.LITERAL:
                if part != segment.value:
                    return None
            elif not part:
                return None
            else:
                params[segment.value] = unquote(part)
        return params if count == len(self.segments) else None


class Router:
    """The route table, compiled from the config's routes in config order."""

    __slots__ = ("_by_first", "_ordered", "_wildcard")

    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        compiled = sorted(
            (_compile(index, route) for index, route in enumerate(routes)),
            key=lambda item: item[0],
        )
        ordered = tuple(route for _, route in compiled)
        self._ordered = ordered
        # Candidates per first path segment. Precedence compares the first segment first, so every
        # route starting with a literal sorts before every route starting with a parameter: the
        # candidates for a first segment are its literal routes, then the parameter routes. Built in
        # one pass and kept apart (not one merged tuple per first segment, which grew as literal
        # first segments times parameter routes and made a 20,000-route load take minutes).
        self._wildcard = tuple(r for r in ordered if r.segments[0].kind is not _Kind.LITERAL)
        by_first: dict[str, list[_CompiledRoute]] = {}
        for r in ordered:
            if r.segments[0].kind is _Kind.LITERAL:
                by_first.setdefault(r.segments[0].value, []).append(r)
        self._by_first = {first: tuple(literal) for first, literal in by_first.items()}

    def match(self, host: str | None, method: str, path: str) -> RouteMatch | RouteMiss:
        """Route a canonical ``path``. ``host`` is the Host header as sent (port allowed)."""
        parts = path[1:].split("/")
        host_key = _host_key(host)
        allowed: set[str] = set()
        for candidates in (self._by_first.get(parts[0], ()), self._wildcard):
            for candidate in candidates:
                if candidate.hosts and host_key not in candidate.hosts:
                    continue
                params = candidate.match_path(parts)
                if params is None:
                    continue
                if not candidate.methods or method in candidate.methods:
                    return RouteMatch(candidate.route, params)
                allowed.update(candidate.methods)
        if allowed:
            return RouteMiss("method_not_allowed", tuple(sorted(allowed)))
        return _NOT_FOUND

    def routes_for_explain(self) -> tuple[RouteConfig, ...]:
        """Every route in the order matching tries them (for ``portcullis check``)."""
        return tuple(r.route for r in self._ordered)


def _compile(index: int, route: RouteConfig) -> tuple[tuple[tuple[int, ...], int], _CompiledRoute]:
    where = f"routes[{index}]"
    segments = tuple(_compile_segment(raw, f"{where}.path") for raw in route.path[1:].split("/"))
    hosts = frozenset(_config_host(h, f"{where}.hosts") for h in route.hosts)
    methods = frozenset(route.methods)
    if "GET" in methods:
        methods |= {"HEAD"}
    if methods and route.cors is not None:
        methods |= {"OPTIONS"}  # CORS preflights are answered by the route's CORS policy
    specificity = tuple(int(s.kind) for s in segments)
    compiled = _CompiledRoute(route, segments, hosts, methods, specificity)
    return (specificity, index), compiled


def _compile_segment(raw: str, where: str) -> _Segment:
    if raw.startswith("{") and raw.endswith("}"):
        name, _, kind = raw[1:-1].partition(":")
        return _Segment(_Kind.REST if kind == "path" else _Kind.PARAM, name)
    if not raw:
        return _Segment(_Kind.LITERAL, "")
    try:
        canonical = canonicalize_path(b"/" + raw.encode("ascii"))
    except (ClientError, UnicodeEncodeError):
        raise ConfigError("a literal path segment is not a valid URL path segment", path=where) from None
    if canonical == "/" or "/" in canonical[1:]:
        raise ConfigError("a literal path segment cannot be '.' or '..'", path=where)
    return _Segment(_Kind.LITERAL, canonical[1:])


def _config_host(host: str, where: str) -> str:
    text = host.strip()
    if text.count(":") >= 2 and not text.startswith("["):
        text = f"[{text}]"  # a bare IPv6 address
    has_port = not text.endswith("]") if text.startswith("[") else ":" in text
    key = _host_key(text)
    if key is None or has_port:
        raise ConfigError("give a host name without a port", path=where)
    return key


def _host_key(host: str | None) -> str | None:
    """``API.example.com.:8443`` → ``api.example.com``; ``[::1]:8080`` → ``[::1]``."""
    if not host:
        return None
    if host.startswith("["):
        close = host.find("]")
        name = host[: close + 1] if close != -1 else host
    else:
        name = host.partition(":")[0]
    if name.endswith("."):
        name = name[:-1]
    return name.lower() or None
