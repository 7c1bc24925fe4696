"""The ``egress:`` config section: what it accepts, what it refuses, and the guard policy it yields."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from portcullis.config.loader import load_config_text
from portcullis.egress.policy import default_policy, route_policy
from portcullis.errors import ConfigError

BASE = """
keys: {pepper: "egress-config-test-pepper-0123456789abcdef"}
upstreams: {api: {url: "http://127.0.0.1:9"}}
routes: [{name: r, path: /r, upstream: api, auth: none}]
"""


def load(egress: str):  # type: ignore[no-untyped-def]
    return load_config_text(BASE + egress, env={})


def test_routes_yield_their_guard_policy() -> None:
    cfg = load("""
egress:
  allow_hosts: ["*.github.com", "crm.corp.example"]
  routes:
    - {name: github, url: "https://api.github.com"}
    - {name: crm, url: "https://crm.corp.example:8443/v2", allow_networks: [10.20.0.0/16], allow_hosts: []}
""")
    assert cfg.egress is not None
    github = route_policy(cfg.egress, cfg.egress.routes[0])
    assert github.allowed_hosts == ("api.github.com",) and github.allowed_ports == {80, 443}
    assert github.global_hosts == ("*.github.com", "crm.corp.example") and not github.allow_http
    crm = route_policy(cfg.egress, cfg.egress.routes[1])
    assert crm.allowed_ports == {8443} and crm.allowed_networks == (ip_network("10.20.0.0/16"),)
    assert default_policy(cfg.egress).global_hosts == github.global_hosts
    assert default_policy(None).global_hosts == ()


@pytest.mark.parametrize(("egress", "message"), [
    ('egress: {routes: [{name: a, url: "http://api.example"}]}', "allow_http"),
    ('egress: {routes: [{name: a, url: "ftp://api.example"}]}', "https://host"),
    ('egress: {routes: [{name: a, url: "https://user:pw@api.example"}]}', "credentials"),
    ('egress: {routes: [{name: a, url: "https://api.example?x=1"}]}', "credentials, a query"),
    ('egress: {routes: [{name: a, url: "https://a.example"}, {name: a, url: "https://b.example"}]}', "unique"),
    ('egress: {allow_hosts: ["*.github.com"], routes: [{name: a, url: "https://evil.example"}]}',
     "not in egress.allow_hosts"),
    ('egress: {allow_hosts: ["*.*.com"]}', "exact host name or"),
    ('egress: {routes: [{name: "bad name", url: "https://a.example"}]}', "route names"),
    ('egress: {routes: [{name: a, url: "https://a.example", allow_networks: ["10.0.0.0/33"]}]}', "allow_networks"),
    ('egress: {routes: [{name: a, url: "https://a.example", retries: 3}]}', "retries"),
    ('egress: {entry: {path_prefix: "/r"}}', "also used by an ingress route"),
    ('egress: {entry: {path_prefix: "egress/"}}', "expected a path"),
    ('egress: {entry: {auth: {jwt: {}}}}', "no `jwt_issuers`"),
])
def test_unsafe_or_unknown_settings_are_refused_naming_the_field(egress: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(egress)
    assert message in str(info.value)


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("/v1/items", "/v1/items", True), ("/v1/items", "/v1/items/1", False), ("/v1/*/issues", "/v1/app/issues", True),
    ("/v1/*/issues", "/v1/issues", False), ("/v1/**", "/v1/a/b", True), ("/v1/**", "/v1", False),
    ("/**", "/anything/at/all", True), ("/", "/", True),
])
def test_path_patterns(pattern: str, path: str, expected: bool) -> None:
    from portcullis.config.egress import path_matches

    assert path_matches(pattern, path) is expected


@pytest.mark.parametrize("pattern", ["v1/items", "/v1/**/x", "/v1/it ems", "/v1/a*b"])
def test_bad_path_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ConfigError):
        load(f'egress: {{routes: [{{name: a, url: "https://a.example", paths: ["{pattern}"]}}]}}')
