"""The admin API as operators use it: keys (rotate with grace, disable, pages), tokens, secrets, and
the security event each act leaves behind."""

from __future__ import annotations

from typing import Any

import httpx
import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.conftest import Gateway, GatewayFactory, UpstreamServer, gateway_yaml

from portcullis.admin.app import create_admin_app
from portcullis.vault.vault import generate_master_key

ROUTES = """
routes:
  - {name: orders, path: "/orders/{order_id}", upstream: api}
"""


async def events(gw: Gateway, action: str) -> list[dict[str, Any]]:
    return [r for r in await gw.audit_records() if r["class"] == "security" and r["event"]["action"] == action]


async def test_a_rotated_key_keeps_its_former_secret_for_the_grace_period_only(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    old = await gw.key("alice")
    key_id = old.split("_")[1]
    async with await gw.admin("admin") as admin:
        rotated = await admin.post(f"/keys/{key_id}/rotate", json={"grace_s": 600})
        assert rotated.status_code == 200 and rotated.headers["cache-control"] == "no-store"
        new = rotated.json()["key"]
        assert new != old and new.split("_")[1] == key_id
        view = (await admin.get(f"/keys/{key_id}")).json()
        assert view["former_secret_valid_until"] == gw.clock.wall() + 600 and "secret" not in str(view).lower().replace(
            "former_secret_valid_until", "")
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": old})).status_code == 200
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": new})).status_code == 200
    gw.clock.advance(601)
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": old})).status_code == 401
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": new})).status_code == 200
    [event] = await events(gw, "key.rotate")
    assert event["event"]["target"] == f"key_id={key_id}" and event["event"]["grace_s"] == 600


async def test_disable_and_enable_are_reversible_but_revocation_is_not(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    key = await gw.key("alice")
    key_id = key.split("_")[1]
    headers = {"X-API-Key": key}
    async with await gw.admin("admin") as admin:
        assert (await admin.post(f"/keys/{key_id}/disable")).json()["status"] == "disabled"
        assert (await gw.client.get("/orders/1", headers=headers)).status_code == 401
        assert (await admin.post(f"/keys/{key_id}/enable")).json()["status"] == "active"
        assert (await gw.client.get("/orders/1", headers=headers)).status_code == 200
        assert (await admin.post(f"/keys/{key_id}/revoke")).status_code == 200
        assert (await admin.post(f"/keys/{key_id}/enable")).status_code == 404
        assert (await admin.post(f"/keys/{key_id}/rotate", json={})).status_code == 404
        assert (await admin.get(f"/keys/{key_id}")).json()["state"] == "revoked"
    assert (await gw.client.get("/orders/1", headers=headers)).status_code == 401


async def test_keys_are_listed_a_page_at_a_time_and_developers_see_only_their_consumers(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    mine = [await gw.key("acme") for _ in range(3)]
    theirs = await gw.key("globex")
    async with await gw.admin("admin") as admin:
        seen, after = [], None
        while True:
            page = (await admin.get("/keys", params={"limit": 2, **({"after": after} if after else {})})).json()
            seen += [k["key_id"] for k in page["keys"]]
            if (after := page["next_after"]) is None:
                break
        assert sorted(seen) == sorted(k.split("_")[1] for k in [*mine, theirs])
    async with await gw.admin("developer", consumers=("acme",)) as developer:
        own = (await developer.get("/keys", params={"consumer": "acme"})).json()["keys"]
        assert sorted(k["key_id"] for k in own) == sorted(k.split("_")[1] for k in mine)
        assert (await developer.get("/keys", params={"consumer": "globex"})).status_code == 403
        assert (await developer.get("/keys")).status_code == 403
        assert (await developer.get(f"/keys/{theirs.split('_')[1]}")).status_code == 404  # not even its existence
        assert (await developer.get(f"/keys/{mine[0].split('_')[1]}")).status_code == 200
        assert (await developer.post("/keys", json={"consumer": "acme"})).status_code == 403


async def test_an_operator_cannot_mint_a_token_with_more_power_than_their_own(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    async with await gw.admin("admin") as admin:
        escalation = await admin.post("/admin-tokens", json={"name": "me", "role": "security"})
        assert escalation.status_code == 403
        sideways = await admin.post("/admin-tokens", json={"name": "auditor", "role": "compliance"})
        assert sideways.status_code == 403  # compliance holds audit permissions an admin lacks
        made = await admin.post("/admin-tokens", json={"name": "ci", "role": "developer", "consumers": ["acme"]})
        assert made.status_code == 201
        token, token_id = made.json()["token"], made.json()["token_id"]
        assert (await admin.post("/admin-tokens", json={"name": "x", "role": "nosuchrole"})).status_code == 409
    app = create_admin_app(gw.app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://127.0.0.1",
                                 headers={"Authorization": f"Bearer {token}"}) as ci:
        assert (await ci.get("/keys", params={"consumer": "acme"})).status_code == 200
        async with await gw.admin("security") as security:
            assert (await security.post(f"/admin-tokens/{token_id}/revoke")).status_code == 200
        assert (await ci.get("/keys", params={"consumer": "acme"})).status_code == 401  # the very next request
    outcomes = [(e["event"]["outcome"], e["event"].get("granted_role")) for e in await events(gw, "token.create")]
    assert outcomes == [("denied", None), ("denied", None), ("ok", "developer"), ("refused", None)]


async def test_secrets_are_write_only_and_every_change_is_a_security_event(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES), env={"PORTCULLIS_SECRET_KEY": generate_master_key()})
    value = "sk-live-" + "Z" * 40
    async with await gw.admin("admin") as admin:
        put = await admin.put("/secrets/stripe", json={"value": value})
        assert put.status_code == 200 and put.json()["name"] == "stripe" and "fingerprint" in put.json()
        listed = await admin.get("/secrets")
        rotated = await admin.post("/secrets/stripe/rotate", json={"value": value + "2"})
        missing = await admin.post("/secrets/nosuch/rotate", json={"value": "x"})
        deleted = await admin.delete("/secrets/stripe")
        again = await admin.delete("/secrets/stripe")
    assert [r["name"] for r in listed.json()] == ["stripe"]
    assert (rotated.status_code, missing.status_code, deleted.status_code, again.status_code) == (200, 404, 204, 404)
    for answer in (put, listed, rotated):
        assert value not in answer.text
    trail = str(await gw.audit_records())
    assert value not in trail
    actions = [(e["event"]["action"], e["event"]["outcome"]) for e in await gw.audit_records() if e["class"] == "security"]
    assert actions == [("secret.put", "ok"), ("secret.rotate", "ok"), ("secret.rotate", "refused"),
                       ("secret.delete", "ok"), ("secret.delete", "refused")]


async def test_a_security_event_names_actor_role_address_agent_target_and_outcome(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    async with await gw.admin("admin") as admin:
        made = await admin.post("/keys", json={"consumer": "alice", "scopes": ["orders:read"], "roles": ["billing"]},
                                headers={"User-Agent": "ops-cli/1.0"})
    key_id = made.json()["key_id"]
    [event] = await events(gw, "key.create")
    assert event["client_ip"] == "127.0.0.1" and event["user_agent"] == "ops-cli/1.0"
    assert event["request_id"] == made.headers["x-request-id"]
    assert event["event"]["actor"].startswith("token:") and event["event"]["role"] == "admin"
    assert event["event"]["outcome"] == "ok" and event["event"]["key_id"] == key_id
    assert event["event"]["roles"] == ["billing"] and event["decision"] == "key.create:ok"
    assert made.json()["key"] not in str(event)


async def test_operator_jwts_from_the_configured_issuer_carry_their_roles(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = pyjwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": "ops", "use": "sig", "alg": "RS256"})
    issuer_yaml = f"""
jwt_issuers:
  - {{name: ops-idp, issuer: "https://sso.example.test", audiences: [portcullis-admin], algorithms: [RS256],
      keys: [{jwk!r}], roles_claim: groups}}
admin: {{enabled: false, operators: {{issuer: ops-idp}}}}
""".replace("'", '"')
    gw = await make_gateway(gateway_yaml(upstream.url, issuer_yaml + ROUTES).replace("admin: {enabled: false}\n", "", 1))

    def token(**claims: object) -> str:
        now = int(gw.clock.wall())
        body = {"iss": "https://sso.example.test", "aud": "portcullis-admin", "sub": "jane", "iat": now,
                "exp": now + 300, **claims}
        return pyjwt.encode(body, key, algorithm="RS256", headers={"kid": "ops"})

    app = create_admin_app(gw.app)

    async def call(bearer: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://127.0.0.1",
                                     headers={"Authorization": f"Bearer {bearer}"}) as client:
            return await client.post("/keys", json={"consumer": "alice"})

    assert (await call(token(groups=["admin", "staff"]))).status_code == 201
    assert (await call(token(groups=["developer"]))).status_code == 403
    assert (await call(token(groups="staff"))).status_code == 403  # no admin role at all
    assert (await call(token(groups=["admin"], aud="someone-else"))).status_code == 401
    assert (await call(token(groups=["admin"], exp=int(gw.clock.wall()) - 3600))).status_code == 401
    made = [e["event"] for e in await events(gw, "key.create")]
    assert [(e["outcome"], e["actor"], e["role"]) for e in made] == [
        ("ok", "oidc:ops-idp:jane", "admin"), ("denied", "oidc:ops-idp:jane", "developer"),
        ("denied", "oidc:ops-idp:jane", "none")]
