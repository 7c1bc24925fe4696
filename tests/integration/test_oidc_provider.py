"""OpenID Connect against a real, certified provider (panva's oidc-provider under Node, on 127.0.0.1):
discovery, JWT access tokens verified through the discovered JWKS, key rotation at the provider,
opaque tokens introspected, revocation, and an issuer that does not match its discovery document."""

from __future__ import annotations

import time

from tests.conftest import Gateway, GatewayFactory, UpstreamServer, gateway_yaml
from tests.oidc import GATEWAY, JWT_RESOURCE, OPAQUE_RESOURCE, OidcProvider, oidc_provider

from portcullis.testing import ManualClock
from portcullis.vault import generate_master_key

__all__ = ["oidc_provider"]  # the fixture, imported for pytest

TTL_S = 60


def _config(issuer: str) -> str:
    return f"""
jwt_issuers:
  - name: op
    issuer: "{issuer}"
    discovery: true
    allow_http_jwks: true
    audiences: [{JWT_RESOURCE}, {OPAQUE_RESOURCE}]
    algorithms: [RS256]
    consumer_claim: client_id
    jwks_cache_ttl: {TTL_S}s
    jwks_min_refresh_interval: 5s
    introspection:
      client_id: {GATEWAY[0]}
      client_secret: "{{secret:op-introspection}}"
      cache_ttl: 30s
routes:
  - {{name: jwt, path: "/jwt", upstream: api, auth: {{jwt: {{}}}}, authorize: {{scopes_all: [read]}}}}
  - {{name: opaque, path: "/opaque", upstream: api, auth: {{introspection: {{issuer: op}}}}}}
"""


async def _gateway(make_gateway: GatewayFactory, upstream: UpstreamServer, issuer: str) -> Gateway:
    """The gateway on a clock that starts at the real time: the provider stamps its tokens with it."""
    return await make_gateway(gateway_yaml(upstream.url, _config(issuer)), clock=ManualClock(wall=time.time()),
                              secrets={"op-introspection": GATEWAY[1]},
                              env={"PORTCULLIS_SECRET_KEY": generate_master_key()})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_discovered_jwks_verifies_the_providers_jwt_access_token(
    make_gateway: GatewayFactory, upstream: UpstreamServer, oidc_provider: OidcProvider
) -> None:
    gw = await _gateway(make_gateway, upstream, oidc_provider.issuer)
    token = await oidc_provider.token(JWT_RESOURCE, scope="read")
    r = await gw.client.get("/jwt", headers=_bearer(token))
    assert r.status_code == 200
    assert upstream.seen[-1].header("x-consumer-id") == "worker"
    assert upstream.seen[-1].header("x-consumer-scopes") == "read"


async def test_key_rotated_at_the_provider_verifies_and_a_retired_key_stops_within_the_ttl(
    make_gateway: GatewayFactory, upstream: UpstreamServer, oidc_provider: OidcProvider
) -> None:
    gw = await _gateway(make_gateway, upstream, oidc_provider.issuer)
    old = await oidc_provider.token(JWT_RESOURCE)
    assert (await gw.client.get("/jwt", headers=_bearer(old))).status_code == 200
    assert await oidc_provider.hook("rotate") == ["key-2", "key-1"]
    new = await oidc_provider.token(JWT_RESOURCE)  # signed with key-2, a kid the gateway has not seen
    assert (await gw.client.get("/jwt", headers=_bearer(new))).status_code == 200
    assert await oidc_provider.hook("retire") == ["key-2"]
    gw.clock.advance(TTL_S)  # the JWKS TTL: the next lookup refetches and key-1 is gone
    r = await gw.client.get("/jwt", headers=_bearer(old))
    assert r.status_code == 401
    assert r.json()["code"] == "auth.invalid_credentials"
    assert (await gw.client.get("/jwt", headers=_bearer(new))).status_code == 200
    assert [rec["decision"] for rec in await gw.audit_records()][-2] == "auth_failed:unknown_kid"


async def test_opaque_token_is_introspected_at_the_provider(
    make_gateway: GatewayFactory, upstream: UpstreamServer, oidc_provider: OidcProvider
) -> None:
    gw = await _gateway(make_gateway, upstream, oidc_provider.issuer)
    token = await oidc_provider.token(OPAQUE_RESOURCE, scope="read write")
    assert token.count(".") == 0  # opaque: nothing for the gateway to verify locally
    r = await gw.client.get("/opaque", headers=_bearer(token))
    assert r.status_code == 200
    assert upstream.seen[-1].header("x-consumer-id") == "worker"
    assert upstream.seen[-1].header("x-consumer-scopes") == "read write"


async def test_token_revoked_at_the_provider_is_refused(
    make_gateway: GatewayFactory, upstream: UpstreamServer, oidc_provider: OidcProvider
) -> None:
    gw = await _gateway(make_gateway, upstream, oidc_provider.issuer)
    token = await oidc_provider.token(OPAQUE_RESOURCE)
    assert (await gw.client.get("/opaque", headers=_bearer(token))).status_code == 200
    await oidc_provider.revoke(token)
    gw.clock.advance(30)  # introspection.cache_ttl: a revocation takes effect within it
    r = await gw.client.get("/opaque", headers=_bearer(token))
    assert r.status_code == 401
    assert r.json()["code"] == "auth.invalid_credentials"
    assert (await gw.audit_records())[-1]["decision"] == "auth_failed:inactive"


async def test_active_token_for_another_resource_is_refused(
    make_gateway: GatewayFactory, upstream: UpstreamServer, oidc_provider: OidcProvider
) -> None:
    """The provider says "active" for a token of another audience; the gateway still refuses it."""
    gw = await make_gateway(
        gateway_yaml(upstream.url, _config(oidc_provider.issuer).replace(f", {OPAQUE_RESOURCE}]", "]")),
        clock=ManualClock(wall=time.time()), secrets={"op-introspection": GATEWAY[1]},
        env={"PORTCULLIS_SECRET_KEY": generate_master_key()},
    )
    token = await oidc_provider.token(OPAQUE_RESOURCE)  # for api.opaque.test, which this gateway is not
    r = await gw.client.get("/opaque", headers=_bearer(token))
    assert r.status_code == 401
    assert (await gw.audit_records())[-1]["decision"] == "auth_failed:bad_audience"


async def test_issuer_that_differs_from_its_discovery_document_is_refused(
    make_gateway: GatewayFactory, upstream: UpstreamServer, oidc_provider: OidcProvider
) -> None:
    """Configured as http://localhost:PORT, the provider's document says http://127.0.0.1:PORT:
    not the same issuer (OpenID Connect Discovery 1.0 section 4.3), so nothing it names is used."""
    aliased = oidc_provider.issuer.replace("127.0.0.1", "localhost")
    gw = await _gateway(make_gateway, upstream, aliased)
    token = await oidc_provider.token(OPAQUE_RESOURCE)
    r = await gw.client.get("/opaque", headers=_bearer(token))
    assert r.status_code == 503
    assert r.json()["code"] == "service.unavailable"
    assert (await gw.audit_records())[-1]["decision"] == "auth_failed:idp_unavailable"
