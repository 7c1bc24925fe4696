"""Which egress route a proxy request belongs to: a URL by base-URL prefix, a tunnel by host and port.

Why one table: the proxy door must charge a request to the same route the in-process transport
would (scheme, host, port, then the longest path prefix: ``egress/transport.py``'s matching), and
a tunnel to the route whose destination it reaches. Built once per config, pure, no I/O.

Tunnels: a ``CONNECT host:port`` belongs to the route whose base URL names that host and port
(443 for ``https`` and 80 for ``http`` without a port), or, failing that, to the first route (in
config order) with that port whose ``allow_hosts`` covers the host (the route's own allow-list;
the global ``egress.allow_hosts`` still applies in the guard's policy). A tunnel to an ``http``
route is read, never spliced (``TunnelMode.READ``), so its traffic always passes the pipeline; an
``https`` route with path or method rules is never spliced either (``splice_refusal``).

What it refuses to do: guess. No route, no tunnel (403 ``egress.destination_denied`` upstream).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from portcullis.config.egress import EgressConfig, EgressRouteConfig
from portcullis.config.types import host_allowed
from portcullis.egress.proxy.base import TunnelMode

__all__ = ["RouteMap", "UrlMatch", "splice_refusal", "tunnel_mode"]


@dataclass(frozen=True, slots=True)
class UrlMatch:
    route: EgressRouteConfig
    relative: str  # the path and query under the route's base URL, starting with "/"


@dataclass(frozen=True, slots=True)
class _Base:
    scheme: str
    host: str
    port: int
    prefix: str
    route: EgressRouteConfig


class RouteMap:
    """URL and tunnel matching for one ``egress:`` config."""

    def __init__(self, config: EgressConfig) -> None:
        bases = []
        for route in config.routes:
            parts = urlsplit(route.url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            bases.append(_Base(parts.scheme, (parts.hostname or "").lower().rstrip("."), port,
                               parts.path.rstrip("/"), route))
        self._bases = sorted(bases, key=lambda b: len(b.prefix), reverse=True)  # the longest prefix wins
        self._ordered = bases

    def for_url(self, scheme: str, host: str, port: int, path_and_query: str) -> UrlMatch | None:
        path, sep, query = path_and_query.partition("?")
        for base in self._bases:
            if (scheme, host, port) != (base.scheme, base.host, base.port):
                continue
            if base.prefix and path != base.prefix and not path.startswith(base.prefix + "/"):
                continue
            relative = (path[len(base.prefix):] or "/") + (f"?{query}" if sep else "")
            return UrlMatch(base.route, relative)
        return None

    def for_tunnel(self, host: str, port: int) -> EgressRouteConfig | None:
        same_port = [b for b in self._ordered if b.port == port]
        for base in same_port:
            if base.host == host:
                return base.route
        for base in same_port:
            if base.route.allow_hosts and host_allowed(host, base.route.allow_hosts):
                return base.route
        return None


def tunnel_mode(route: EgressRouteConfig) -> TunnelMode:
    """How a tunnel to ``route`` is served: read (``http``), intercepted, or spliced unread."""
    if urlsplit(route.url).scheme == "http":
        return TunnelMode.READ
    return TunnelMode.INTERCEPT if route.intercept else TunnelMode.SPLICE


def splice_refusal(route: EgressRouteConfig) -> str | None:
    """Why ``route`` may not be reached through a tunnel the gateway cannot read, or ``None``.

    A route that limits its paths or methods says which calls are allowed; an opaque tunnel would
    carry any call to the host, so it is refused (``intercept: true`` lets such a route be
    reached through ``CONNECT``, each request checked).
    """
    if route.paths or route.methods:
        return "tunnel_bypasses_route_rules"
    return None
