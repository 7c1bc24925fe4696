"""OIDC options at load: discovery, introspection, step-up, asserted identities, egress client credentials."""

from __future__ import annotations

import pytest

from portcullis.config.loader import load_config_text
from portcullis.errors import ConfigError

BASE = """
upstreams: {api: {url: "http://127.0.0.1:9000"}}
"""
ISSUER = """
jwt_issuers:
  - name: op
    issuer: https://op.example
    audiences: [api]
    algorithms: [RS256]
"""


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config_text(BASE + text, env={"SECRET": "s3cret"})
    return str(info.value)


def test_a_discovery_issuer_with_introspection_and_every_new_route_method_loads() -> None:
    cfg = load_config_text(BASE + ISSUER + """
    discovery: true
    introspection: {client_id: gw, client_secret: "${SECRET}"}
routes:
  - name: r
    path: /r
    upstream: api
    auth: {jwt: {}, introspection: {issuer: op}, jwt_assertion: {issuers: [op]}}
    authorize: {acr_values: [loa3], amr_any: [mfa]}
""", env={"SECRET": "s3cret"})
    issuer = cfg.jwt_issuers[0]
    assert issuer.introspection is not None and issuer.introspection.client_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(cfg)


@pytest.mark.parametrize(("extra", "message"), [
    ("    discovery: true\n    jwks_uri: https://op.example/jwks\nroutes: []", "leave `jwks_uri` out"),
    ("    introspection: {client_id: gw, client_secret: x}\n    keys: []\n", "set `jwks_uri`"),
], ids=["discovery-and-jwks-uri", "no-keys"])
def test_issuer_key_sources_must_be_unambiguous(extra: str, message: str) -> None:
    assert message in error_of(ISSUER + extra)


def test_introspection_without_endpoint_needs_discovery() -> None:
    text = ISSUER + """    jwks_uri: https://op.example/jwks
    introspection: {client_id: gw, client_secret: x}
routes: [{name: r, path: /r, upstream: api, auth: none}]
"""
    assert "introspection.endpoint" in error_of(text)


def test_discovery_of_an_http_issuer_needs_the_testing_switch() -> None:
    text = ISSUER.replace("https://op.example", "http://op.example") + """    discovery: true
routes: [{name: r, path: /r, upstream: api, auth: none}]
"""
    assert "https issuer" in error_of(text)


def test_a_route_cannot_introspect_at_an_issuer_without_introspection() -> None:
    text = ISSUER + """    jwks_uri: https://op.example/jwks
routes: [{name: r, path: /r, upstream: api, auth: {introspection: {issuer: op}}}]
"""
    assert "has no `introspection` section" in error_of(text)


def test_a_public_route_cannot_ask_for_step_up() -> None:
    text = "routes: [{name: r, path: /r, upstream: api, auth: none, authorize: {amr_any: [mfa]}}]"
    assert "acr/amr" in error_of(text)


@pytest.mark.parametrize("oauth2", [
    '{token_url: "https://auth.example/token", client_id: c, client_secret: "plain-secret"}',
    '{token_url: "https://auth.example/token", client_id: c}',
    '{token_url: "http://auth.example/token", client_id: c, client_secret: "{secret:c}"}',
    '{token_url: "https://auth.example/token", client_id: c, client_secret: "{secret:c}", '
    'private_key_jwt: {key: "{secret:k}"}}',
], ids=["secret-in-config", "no-client-auth", "plain-http", "two-client-auths"])
def test_egress_client_credentials_refuse_unsafe_settings(oauth2: str) -> None:
    text = f"""routes: [{{name: r, path: /r, upstream: api, auth: none}}]
egress:
  entry: {{enabled: false}}
  routes: [{{name: p, url: "https://api.example", oauth2: {oauth2}}}]
"""
    assert "oauth2" in error_of(text)
