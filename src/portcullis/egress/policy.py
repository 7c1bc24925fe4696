"""From the ``egress:`` config to the guard's ``GuardPolicy``: one function, used by the data path
and by ``portcullis egress check``, so the two cannot disagree."""

from __future__ import annotations

from urllib.parse import urlsplit

from portcullis.config.egress import EgressConfig, EgressRouteConfig
from portcullis.egress.ssrf import GuardPolicy

__all__ = ["default_policy", "route_policy", "token_endpoint_policy"]


def default_policy(egress: EgressConfig | None) -> GuardPolicy:
    """The policy for a URL checked outside any route: public https on 443 (or 80 if allowed)."""
    return GuardPolicy(global_hosts=tuple(egress.allow_hosts) if egress else ())


def route_policy(egress: EgressConfig, route: EgressRouteConfig) -> GuardPolicy:
    """A route reaches its own host (plus its ``allow_hosts``), on its own port, within the global list."""
    parts = urlsplit(route.url)
    host = (parts.hostname or "").lower().rstrip(".")
    ports = {443, 80} if parts.port is None else {parts.port}
    return GuardPolicy(
        allowed_hosts=(host, *route.allow_hosts),
        global_hosts=tuple(egress.allow_hosts),
        allowed_networks=tuple(route.allow_networks),
        allow_http=route.allow_http,
        allowed_ports=frozenset(ports),
    )


def token_endpoint_policy(egress: EgressConfig, route: EgressRouteConfig, token_url: str) -> GuardPolicy:
    """A route's OAuth 2.0 token endpoint is a destination like any other: its own host and port only,
    within the global list, through the route's network exceptions, plain http only if it allows it."""
    parts = urlsplit(token_url)
    host = (parts.hostname or "").lower().rstrip(".")
    ports = {443, 80} if parts.port is None else {parts.port}
    return GuardPolicy(
        allowed_hosts=(host,),
        global_hosts=tuple(egress.allow_hosts),
        allowed_networks=tuple(route.allow_networks),
        allow_http=route.oauth2 is not None and route.oauth2.allow_http,
        allowed_ports=frozenset(ports),
    )
