"""The role matrix: every admin route against every role, compared with what the operator guide promises.

The table below is written by hand on purpose: it is the promise (docs/operator-guide.md prints the
same matrix), and the code must match it. A route added without an entry fails the first test; a
permission moved between roles fails the walk.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi.routing import APIRoute
from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml

from portcullis.admin.app import create_admin_app
from portcullis.admin.guard import PUBLIC, route_permission

ROLES = ("developer", "admin", "security", "compliance", "viewer")
ALL_BUILT_IN = {"developer", "admin", "security", "compliance"}
OPERATORS = {"admin", "security"}

EXPECTED: dict[str, set[str]] = {
    "GET /metrics": OPERATORS,
    "GET /openapi.json": ALL_BUILT_IN | {"viewer"},
    "GET /status": ALL_BUILT_IN | {"viewer"},
    "GET /keys": {"developer", *OPERATORS},
    "GET /keys/{key_id}": {"developer", *OPERATORS},
    "POST /keys": OPERATORS,
    "POST /keys/{key_id}/rotate": OPERATORS,
    "POST /keys/{key_id}/disable": OPERATORS,
    "POST /keys/{key_id}/enable": OPERATORS,
    "POST /keys/{key_id}/revoke": OPERATORS,
    "GET /signing-keys": {"developer", *OPERATORS},
    "GET /signing-keys/{key_id}": {"developer", *OPERATORS},
    "POST /signing-keys": OPERATORS,
    "POST /signing-keys/{key_id}/rotate": OPERATORS,
    "POST /signing-keys/{key_id}/revoke": OPERATORS,
    "GET /admin-tokens": OPERATORS,
    "POST /admin-tokens": OPERATORS,
    "POST /admin-tokens/{token_id}/revoke": OPERATORS,
    "GET /secrets": OPERATORS,
    "PUT /secrets/{name}": OPERATORS,
    "POST /secrets/{name}/rotate": OPERATORS,
    "DELETE /secrets/{name}": OPERATORS,
    "GET /egress/breakers": OPERATORS,
    "POST /egress/breakers/{route}/{action}": OPERATORS,
    "GET /egress/budgets": OPERATORS,
    "POST /egress/budgets/reset": OPERATORS,
    "POST /reload": OPERATORS,
    "GET /blocks": {"security"},
    "POST /blocks": {"security"},
    "DELETE /blocks/{block_id}": {"security"},
    "GET /emergency-limits": {"security"},
    "POST /emergency-limits": {"security"},
    "DELETE /emergency-limits/{emergency_id}": {"security"},
    "GET /anomalies": {"security"},
    "GET /audit/consumers/{consumer}/records": {"developer", *OPERATORS},
    "GET /audit/records": {*OPERATORS, "compliance"},
    "GET /audit/export": {"compliance"},
    "POST /audit/verify": {"compliance"},
    "GET /audit/retention": {"compliance"},
    "POST /audit/retention/run": {"compliance"},
}
PUBLIC_ROUTES = {"GET /healthz", "GET /readyz"}

CONFIG = """
admin:
  enabled: false
  roles: {viewer: [status.read]}
routes:
  - {name: orders, path: "/orders/{order_id}", upstream: api}
"""


def _routes(app: object) -> dict[str, APIRoute]:
    routes = {}
    for route in app.state.routes:  # type: ignore[attr-defined]
        for method in route.methods:
            routes[f"{method} {route.path}"] = route
    return routes


async def test_every_route_declares_a_permission_and_is_in_the_matrix(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, CONFIG).replace("admin: {enabled: false}\n", "", 1))
    routes = _routes(create_admin_app(gw.app))
    assert set(routes) == set(EXPECTED) | PUBLIC_ROUTES
    assert {k for k, r in routes.items() if route_permission(r) == PUBLIC} == PUBLIC_ROUTES


@pytest.mark.parametrize("role", ROLES)
async def test_each_role_reaches_exactly_its_routes(
    make_gateway: GatewayFactory, upstream: UpstreamServer, role: str
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, CONFIG).replace("admin: {enabled: false}\n", "", 1))
    token = await gw.admin_token(role, consumers=("acme",))
    app = create_admin_app(gw.app)
    reached, refused = set(), set()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://127.0.0.1",
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        for name in EXPECTED:
            method, template = name.split(" ", 1)
            path = template.replace("{action}", "reset").replace("{route}", "partner").replace("{consumer}", "acme")
            for param in ("{key_id}", "{token_id}", "{name}"):
                path = path.replace(param, "nosuch000000")
            answer = await client.request(method, path, params={"consumer": "acme"}, json={})
            assert answer.status_code not in (401, 500), (name, answer.text)
            forbidden = answer.status_code == 403 and answer.json()["code"] == "authz.forbidden"
            (refused if forbidden else reached).add(name)
    assert reached == {name for name, roles in EXPECTED.items() if role in roles}
    assert refused == set(EXPECTED) - reached
    denials = [r for r in await gw.audit_records() if r["class"] == "security" and r["event"]["outcome"] == "denied"]
    assert len(denials) == len(refused)  # every refusal is on the record
    assert all(d["event"]["role"] == role and d["event"]["actor"].startswith("token:") for d in denials)


async def test_a_token_whose_role_was_removed_from_the_config_can_do_nothing(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, CONFIG.replace("roles: {viewer: [status.read]}", "roles: {}"))
                            .replace("admin: {enabled: false}\n", "", 1))
    token = await gw.admin_token("viewer")  # made while the role existed elsewhere, say
    async with httpx.AsyncClient(transport=httpx.ASGITransport(create_admin_app(gw.app)),
                                 base_url="http://127.0.0.1", headers={"Authorization": f"Bearer {token}"}) as client:
        assert (await client.get("/status")).status_code == 403
