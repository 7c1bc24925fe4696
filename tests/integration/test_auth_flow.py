"""Authentication and authorization through a real gateway: keys, JWTs, scopes, roles, attribute rules."""

from __future__ import annotations

import jwt as pyjwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml

ROUTES = """
routes:
  - name: orders
    path: "/orders/{order_id}"
    upstream: api
    authorize: {scopes_all: ["orders:read"]}
  - name: any-key
    path: "/ping"
    upstream: api
  - name: users
    path: "/users/{user_id}/profile"
    upstream: api
    auth: {jwt: {}}
    authorize: {rules: [{param: user_id, claim: sub}]}
  - name: admin
    path: "/admin/{rest:path}"
    upstream: api
    auth: {jwt: {}, api_key: {}}
    authorize: {roles_any: [admin]}
"""


def _issuer(upstream_url: str) -> str:
    return f"""
jwt_issuers:
  - name: idp
    issuer: https://idp.example.test
    audiences: [portcullis-api]
    algorithms: [RS256]
    jwks_uri: "{upstream_url}/.well-known/jwks.json"
    allow_http_jwks: true
"""


class Idp:
    def __init__(self, upstream: UpstreamServer) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = pyjwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})

        async def jwks(request: web.Request) -> web.StreamResponse:
            return web.json_response({"keys": [jwk]})

        upstream.responses["/.well-known/jwks.json"] = jwks

    def token(self, now: float, **claims: object) -> str:
        body = {"iss": "https://idp.example.test", "aud": "portcullis-api", "sub": "u-1",
                "iat": int(now), "exp": int(now) + 600, **claims}
        return pyjwt.encode(body, self.key, algorithm="RS256", headers={"kid": "k1"})


async def test_valid_key_with_scope_reaches_the_upstream_as_that_consumer(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, _issuer(upstream.url) + ROUTES))
    key = await gw.key("alice", ("orders:read",))
    r = await gw.client.get("/orders/7", headers={"X-API-Key": key, "X-Consumer-Id": "mallory"})
    assert r.status_code == 200
    seen = upstream.seen[-1]
    assert seen.all("x-consumer-id") == ["alice"]
    assert seen.header("x-consumer-scopes") == "orders:read"
    assert seen.header("x-api-key") is None, "the key must not be forwarded"
    assert r.headers["cache-control"] == "no-store"


async def test_key_in_authorization_bearer_is_accepted_and_not_forwarded(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, _issuer(upstream.url) + ROUTES))
    key = await gw.key("alice")
    r = await gw.client.get("/ping", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    assert upstream.seen[-1].header("authorization") is None


async def test_missing_credentials_is_401_with_a_challenge(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, _issuer(upstream.url) + ROUTES))
    r = await gw.client.get("/orders/7")
    assert r.status_code == 401
    assert r.json()["code"] == "auth.missing_credentials"
    assert r.headers["www-authenticate"].startswith("ApiKey")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert upstream.seen == []


async def test_wrong_unknown_and_malformed_keys_look_the_same(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, _issuer(upstream.url) + ROUTES))
    good = await gw.key("alice", ("orders:read",))
    key_id = good.split("_")[1]
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    bodies = []
    for bad in (tampered, f"pcl_{'z' * len(key_id)}_{good.split('_', 2)[2]}", "hunter2"):
        r = await gw.client.get("/orders/7", headers={"X-API-Key": bad})
        assert r.status_code == 401
        body = r.json()
        bodies.append((body["code"], body["title"]))
    assert len(set(bodies)) == 1 and bodies[0][0] == "auth.invalid_credentials"
    reasons = [rec["decision"] for rec in await gw.audit_records()]
    assert reasons == ["auth_failed:bad_secret", "auth_failed:unknown_key", "auth_failed:malformed_key"]


async def test_key_without_the_scope_is_403(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, _issuer(upstream.url) + ROUTES))
    key = await gw.key("bob", ("profile:read",))
    r = await gw.client.get("/orders/7", headers={"X-API-Key": key})
    assert r.status_code == 403
    assert r.json()["code"] == "authz.forbidden"
    assert (await gw.audit_records())[-1]["decision"] == "forbidden:scope:orders:read"


async def test_expired_key_is_refused(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, _issuer(upstream.url) + ROUTES))
    key = await gw.key("carol", ("orders:read",), expires_in_s=60)
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": key})).status_code == 200
    gw.clock.advance(61)
    r = await gw.client.get("/orders/1", headers={"X-API-Key": key})
    assert r.status_code == 401


async def test_revoked_key_stops_working_at_once(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, _issuer(upstream.url) + ROUTES))
    key = await gw.key("dave", ("orders:read",))
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": key})).status_code == 200
    assert gw.runtime.key_verifier is not None
    assert await gw.runtime.key_verifier.revoke(key.split("_")[1])
    r = await gw.client.get("/orders/1", headers={"X-API-Key": key})
    assert r.status_code == 401


async def test_jwt_bearer_with_matching_subject_passes_the_attribute_rule(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    idp = Idp(upstream)
    gw = await make_gateway(gateway_yaml(upstream.url, _issuer(upstream.url) + ROUTES))
    token = idp.token(gw.clock.wall(), sub="u-42")
    r = await gw.client.get("/users/u-42/profile", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    assert upstream.seen[-1].header("x-consumer-id") == "u-42"
    r = await gw.client.get("/users/u-43/profile", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403  # OWASP API1: broken object level authorization


async def test_expired_jwt_is_rejected_with_401(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    idp = Idp(upstream)
    gw = await make_gateway(gateway_yaml(upstream.url, _issuer(upstream.url) + ROUTES))
    token = idp.token(gw.clock.wall(), sub="u-1")
    gw.clock.advance(3600)
    r = await gw.client.get("/users/u-1/profile", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


async def test_role_rule_refuses_a_token_without_the_role(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    idp = Idp(upstream)
    gw = await make_gateway(gateway_yaml(upstream.url, _issuer(upstream.url) + ROUTES))
    plain = idp.token(gw.clock.wall(), roles=["user"])
    admin = idp.token(gw.clock.wall(), roles=["admin"])
    assert (await gw.client.get("/admin/x", headers={"Authorization": f"Bearer {plain}"})).status_code == 403
    assert (await gw.client.get("/admin/x", headers={"Authorization": f"Bearer {admin}"})).status_code == 200


async def test_two_credentials_in_one_request_are_refused(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    idp = Idp(upstream)
    gw = await make_gateway(gateway_yaml(upstream.url, _issuer(upstream.url) + ROUTES))
    key = await gw.key("erin")
    token = idp.token(gw.clock.wall(), roles=["admin"])
    r = await gw.client.get("/admin/x", headers={"Authorization": f"Bearer {token}", "X-API-Key": key})
    assert r.status_code == 401
    assert (await gw.audit_records())[-1]["decision"] == "auth_failed:ambiguous_credentials"
