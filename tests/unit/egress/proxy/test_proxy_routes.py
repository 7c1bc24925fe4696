"""Which route a proxy request belongs to: URLs by base URL (longest prefix), tunnels by host and port."""

from __future__ import annotations

import pytest

from portcullis.config.egress import EgressConfig
from portcullis.egress.proxy.base import TunnelMode
from portcullis.egress.proxy.routes import RouteMap, splice_refusal, tunnel_mode

CONFIG = EgressConfig.model_validate({"routes": [
    {"name": "gh", "url": "https://api.github.com"},
    {"name": "gh-repos", "url": "https://api.github.com/repos"},
    {"name": "alt", "url": "https://alt.example:8443", "allow_hosts": ["*.cdn.example"]},
    {"name": "wide", "url": "https://wide.example", "allow_hosts": ["*.cdn.example"]},
    {"name": "plain", "url": "http://plain.example", "allow_http": True},
    {"name": "ruled", "url": "https://ruled.example", "paths": ["/v1/**"]},
    {"name": "llm", "url": "https://llm.example", "intercept": True, "paths": ["/v1/**"]},
], "proxy": {"listen": "127.0.0.1:0", "ca": {"cert_file": "c", "key_file": "k"}}})
ROUTES = RouteMap(CONFIG)


@pytest.mark.parametrize(("url", "route", "relative"), [
    (("https", "api.github.com", 443, "/user?x=1"), "gh", "/user?x=1"),
    (("https", "api.github.com", 443, "/repos/acme/app"), "gh-repos", "/acme/app"),  # the longest prefix
    (("https", "api.github.com", 443, "/repos"), "gh-repos", "/"),
    (("https", "api.github.com", 443, "/reposx"), "gh", "/reposx"),  # a prefix is whole segments
    (("http", "plain.example", 80, "/"), "plain", "/"),
    (("http", "api.github.com", 80, "/user"), None, None),  # no scheme change
    (("https", "api.github.com", 8443, "/user"), None, None),  # nor port
])
def test_a_url_belongs_to_the_route_whose_base_covers_it(
    url: tuple[str, str, int, str], route: str | None, relative: str | None,
) -> None:
    match = ROUTES.for_url(*url)
    assert (match.route.name if match else None, match.relative if match else None) == (route, relative)


@pytest.mark.parametrize(("host", "port", "route"), [
    ("api.github.com", 443, "gh"),  # its own host first, in config order
    ("alt.example", 8443, "alt"),
    ("img.cdn.example", 8443, "alt"),  # an allow_hosts entry, on the route's port only
    ("img.cdn.example", 443, "wide"),
    ("api.github.com", 80, None),
    ("plain.example", 80, "plain"),
    ("elsewhere.example", 443, None),
])
def test_a_tunnel_belongs_to_the_route_naming_its_host_and_port(host: str, port: int, route: str | None) -> None:
    found = ROUTES.for_tunnel(host, port)
    assert (found.name if found else None) == route


def test_how_each_route_is_tunnelled() -> None:
    by_name = {r.name: r for r in CONFIG.routes}
    assert tunnel_mode(by_name["gh"]) is TunnelMode.SPLICE
    assert tunnel_mode(by_name["plain"]) is TunnelMode.READ
    assert tunnel_mode(by_name["llm"]) is TunnelMode.INTERCEPT
    assert splice_refusal(by_name["gh"]) is None
    assert splice_refusal(by_name["ruled"]) == "tunnel_bypasses_route_rules"
