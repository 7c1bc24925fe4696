"""Attacks on the admin listener, and the operators it must still serve.

Sources: OWASP API Security Top 10 2023 (API2 broken authentication, API5 broken function-level
authorization), OWASP CSRF Prevention Cheat Sheet (Origin / Sec-Fetch-Site checks, no ambient
credentials), the DNS-rebinding write-ups against local admin APIs (e.g. the Transmission and
Blizzard updater advisories by Tavis Ormandy, 2018: a page whose name resolves to 127.0.0.1 sends
its own Host), Kong's open-source Admin API having no authentication at all, and LiteLLM issue
31620 (secrets in an audit log). Every case here was possible before: the listener was anonymous.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from tests.conftest import PEPPER, Gateway, GatewayFactory, UpstreamServer, gateway_yaml

from portcullis.admin.app import create_admin_app
from portcullis.admin.guard import PUBLIC, route_permission
from portcullis.identity.admin_tokens import issue_admin_token

ROUTES = """
routes:
  - {name: orders, path: "/orders/{order_id}", upstream: api}
"""


def anonymous(gw: Gateway, *, client: tuple[str, int] = ("127.0.0.1", 5000),
              headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(create_admin_app(gw.app), client=client),
                             base_url="http://127.0.0.1", headers=headers)


def guarded_operations(gw: Gateway) -> list[tuple[str, str]]:
    """Every (method, concrete path) the admin API serves behind credentials."""
    app = create_admin_app(gw.app)
    operations = []
    for route in app.state.routes:
        assert isinstance(route, APIRoute)
        if route_permission(route) == PUBLIC:
            continue
        path = re.sub(r"\{(\w+)\}", lambda m: "open" if m.group(1) == "action" else "x1", route.path)
        operations += [(method, path) for method in sorted(route.methods or ())]
    return operations


async def security_events(gw: Gateway) -> list[dict[str, Any]]:
    return [r for r in await gw.audit_records() if r["class"] == "security"]


async def test_every_admin_operation_refuses_an_anonymous_caller_with_401_and_an_audit_record(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    operations = guarded_operations(gw)
    assert len(operations) >= 15
    for i, (method, path) in enumerate([*operations, ("GET", "/no/such/route"), ("DELETE", "/keys")]):
        async with anonymous(gw, client=(f"10.1.0.{i + 1}", 5000)) as client:  # one address each: no throttle
            answer = await client.request(method, path, json={})
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["code"] == "auth.missing_credentials"
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert answer.headers["x-request-id"] == answer.json()["request_id"]
    events = await security_events(gw)
    assert len(events) == len(operations) + 2
    assert {(e["event"]["action"], e["event"]["outcome"], e["event"]["reason"], e["event"]["actor"]) for e in events} \
        == {("admin.auth", "refused", "missing", "anonymous")}


async def test_probes_stay_open_and_metrics_need_a_token_unless_made_public(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    async with anonymous(gw) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 401
    async with await gw.admin("admin") as admin:
        assert "portcullis_requests_total" in (await admin.get("/metrics")).text
    public = await make_gateway(gateway_yaml(upstream.url, "admin: {enabled: false, metrics_public: true}\n" + ROUTES)
                                .replace("admin: {enabled: false}\n", "", 1))
    async with anonymous(public) as client:
        assert (await client.get("/metrics")).status_code == 200


@pytest.mark.parametrize("credential", [
    "Bearer pca_aaaaaaaaaaaa_" + "A" * 43,  # well formed, unknown id
    "Bearer pca_short",  # malformed
    "Bearer " + "pca_" + "a" * 100_000,  # a megabyte-ish of junk costs one length check
    "Basic YWRtaW46YWRtaW4=",  # admin:admin, the default password of too many consoles
    "Bearer pcl_abcdefghijkl_" + "A" * 43,  # a consumer's API key is not an admin token
    "bearer",  # a scheme without a credential
])
async def test_forged_and_foreign_credentials_get_401(
    make_gateway: GatewayFactory, upstream: UpstreamServer, credential: str
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    async with anonymous(gw, headers={"Authorization": credential}) as client:
        answer = await client.post("/keys", json={"consumer": "mallory", "scopes": ["*"]})
    assert answer.status_code == 401
    assert answer.json()["code"] in ("auth.invalid_credentials", "auth.missing_credentials")
    assert "pca_" not in answer.text and "Traceback" not in answer.text


async def test_a_token_with_a_wrong_secret_an_expired_token_and_a_revoked_token_are_refused(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    good = await gw.admin_token("security")
    wrong_secret = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    expiring = issue_admin_token(name="t", role="admin", created_by="t", pepper=PEPPER.encode(), clock=gw.clock,
                                 expires_in_s=60)
    await gw.services.store.create_admin_token(expiring.record)
    async with anonymous(gw) as client:
        def as_(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        assert (await client.get("/status", headers=as_(good))).status_code == 200
        assert (await client.get("/status", headers=as_(wrong_secret))).status_code == 401
        assert (await client.get("/status", headers=as_(expiring.token))).status_code == 200
        gw.clock.advance(61)
        assert (await client.get("/status", headers=as_(expiring.token))).status_code == 401
        revoked = await client.post(f"/admin-tokens/{expiring.record.token_id}/revoke", headers=as_(good))
        assert revoked.status_code == 200
    reasons = [e["event"].get("reason") for e in await security_events(gw) if e["event"]["action"] == "admin.auth"]
    assert reasons == ["bad_secret", "expired"]


async def test_cookies_and_query_strings_never_carry_admin_credentials(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    # A browser attaches cookies on its own (CSRF); a token in a URL ends up in logs and Referer.
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    token = await gw.admin_token()
    async with anonymous(gw, headers={"Cookie": f"token={token}; session={token}"}) as client:
        assert (await client.get("/status")).status_code == 401
        assert (await client.get(f"/status?token={token}&access_token={token}")).status_code == 401


@pytest.mark.parametrize("host", [
    "attacker.example", "attacker.example:9090", "127.0.0.1.attacker.example", "localhost.attacker.example",
    "[::2]", "", "evil@127.0.0.1", "127.0.0.1:9090@attacker.example", "127.0.0.1:80:80", "127.0.0.1:http",
    "localhost/.attacker.example", "127.0.0.1\tattacker.example",
])
async def test_dns_rebinding_hosts_are_refused_before_credentials_are_read(
    make_gateway: GatewayFactory, upstream: UpstreamServer, host: str
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    token = await gw.admin_token()
    async with anonymous(gw, headers={"Authorization": f"Bearer {token}", "Host": host}) as client:
        answer = await client.post("/keys", json={"consumer": "alice"})
    assert answer.status_code == 421 and answer.json()["code"] == "admin.host_refused"
    assert await gw.services.store.list() == []  # nothing was made


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:9090", "localhost:9090", "LOCALHOST", "[::1]:9090",
                                  "admin.internal:9090"])
async def test_the_listener_answers_to_its_own_names(
    make_gateway: GatewayFactory, upstream: UpstreamServer, host: str
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, "admin: {enabled: false, allowed_hosts: [admin.internal]}\n"
                                         + ROUTES).replace("admin: {enabled: false}\n", "", 1))
    token = await gw.admin_token()
    async with anonymous(gw, headers={"Authorization": f"Bearer {token}", "Host": host}) as client:
        assert (await client.get("/status")).status_code == 200


@pytest.mark.parametrize("headers", [
    {"Origin": "https://attacker.example"},
    {"Origin": "null"},  # sandboxed iframes and file:// pages
    {"Origin": "http://127.0.0.1:9090.attacker.example"},
    {"Sec-Fetch-Site": "cross-site"},
])
async def test_cross_site_requests_are_refused_even_with_a_valid_token(
    make_gateway: GatewayFactory, upstream: UpstreamServer, headers: dict[str, str]
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    token = await gw.admin_token()
    async with anonymous(gw, headers={"Authorization": f"Bearer {token}", **headers}) as client:
        answer = await client.post("/keys", json={"consumer": "alice"})
    assert answer.status_code == 403 and answer.json()["code"] == "admin.origin_refused"
    assert await gw.services.store.list() == []


async def test_an_allowed_origin_is_served(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await make_gateway(gateway_yaml(
        upstream.url, "admin: {enabled: false, allowed_origins: ['https://console.example']}\n" + ROUTES,
    ).replace("admin: {enabled: false}\n", "", 1))
    token = await gw.admin_token()
    async with anonymous(gw, headers={"Authorization": f"Bearer {token}", "Origin": "https://console.example",
                                      "Sec-Fetch-Site": "same-site"}) as client:
        assert (await client.get("/status")).status_code == 200


async def test_failed_authentication_is_throttled_per_address_while_other_operators_are_served(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(
        upstream.url, "admin: {enabled: false, failed_auth: {max_failures: 5, window: 1m}}\n" + ROUTES,
    ).replace("admin: {enabled: false}\n", "", 1))
    token = await gw.admin_token()
    guess = {"Authorization": "Bearer pca_aaaaaaaaaaaa_" + "A" * 43}
    async with anonymous(gw, client=("10.0.0.66", 4444), headers=guess) as attacker:
        statuses = [(await attacker.get("/status")).status_code for _ in range(8)]
        assert statuses == [401] * 5 + [429] * 3
        blocked = await attacker.get("/status", headers={"Authorization": f"Bearer {token}"})
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) == 60  # even a real token waits
    async with anonymous(gw, client=("10.0.0.7", 5555), headers={"Authorization": f"Bearer {token}"}) as operator:
        assert (await operator.get("/status")).status_code == 200
    gw.clock.advance(60)
    async with anonymous(gw, client=("10.0.0.66", 4444), headers={"Authorization": f"Bearer {token}"}) as back:
        assert (await back.get("/status")).status_code == 200
    outcomes = [e["event"]["outcome"] for e in await security_events(gw) if e["event"]["action"] == "admin.auth"]
    assert outcomes == ["refused"] * 5 + ["throttled"] * 4
    rendered = gw.services.metrics.render().decode()
    assert 'portcullis_admin_auth_failures_total{reason="unknown_token"} 5.0' in rendered
    assert 'portcullis_admin_auth_failures_total{reason="throttled"} 4.0' in rendered


async def test_a_leaked_admin_token_never_reaches_the_audit_trail_or_an_answer(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    token = await gw.admin_token()
    secret = token.rsplit("_", 1)[1]
    async with anonymous(gw, headers={"Authorization": f"Bearer {token}"}) as client:
        created = await client.post("/admin-tokens", json={"name": "ci", "role": "developer"})
        assert created.status_code == 201
        minted = created.json()["token"]
        listed = await client.get("/admin-tokens")
        await client.get(f"/keys?consumer_prefix={token}")  # a token pasted into a query
    assert secret not in listed.text and minted.rsplit("_", 1)[1] not in listed.text
    await gw.services.audit.flush()
    trail = await asyncio.to_thread((gw.tmp / "audit.jsonl").read_text)
    assert secret not in trail and minted.rsplit("_", 1)[1] not in trail


async def test_a_flood_of_refused_requests_puts_a_bounded_number_of_records_on_file(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    # Hammering the admin port must not fill the audit queue: with audit.when_full: shed that would
    # make the API listener refuse real traffic.
    gw = await make_gateway(gateway_yaml(
        upstream.url, "admin: {enabled: false, failed_auth: {max_failures: 5, window: 1m}}\n" + ROUTES,
    ).replace("admin: {enabled: false}\n", "", 1))
    async with anonymous(gw, client=("10.0.0.66", 4444)) as attacker:
        for i in range(60):
            answer = await attacker.get("/status", headers={"Host": "evil.example"} if i % 2 else {})
            assert answer.status_code in (401, 421, 429)
    assert len(await security_events(gw)) == 10  # twice max_failures, then silence for the window
    gw.clock.advance(60)
    async with anonymous(gw, client=("10.0.0.66", 4444)) as attacker:
        await attacker.get("/status")
    assert len(await security_events(gw)) == 11  # a new window is on record again
