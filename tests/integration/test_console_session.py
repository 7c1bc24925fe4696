"""The console's sessions: sign-in, the cookie's attributes, timeouts on the clock, revocation, sign-out,
the shared failed-auth throttle, and the wall between the console's cookie and the JSON API."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from tests.conftest import Gateway, GatewayFactory, UpstreamServer, gateway_yaml, self_signed_cert
from tests.console_kit import csrf_of, sign_in

from portcullis.admin.app import create_admin_app

CONFIG = """
admin:
  failed_auth: {max_failures: 3, window: 1m}
  console: {idle_timeout: 10m, lifetime: 1h, max_sessions: 2}
routes:
  - {name: orders, path: "/orders/{order_id}", upstream: api}
"""


async def _gateway(make_gateway: GatewayFactory, upstream: UpstreamServer, extra: str = "") -> Gateway:
    return await make_gateway(gateway_yaml(upstream.url, CONFIG + extra).replace("admin: {enabled: false}\n", "", 1))


def _set_cookie(answer: httpx.Response, name: str) -> str:
    found = [h for h in answer.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    assert len(found) == 1, answer.headers.get_list("set-cookie")
    return found[0]


async def test_sign_in_with_an_admin_token_sets_a_strict_httponly_cookie_for_console_only(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await _gateway(make_gateway, upstream)
    token = await gw.admin_token("admin")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(create_admin_app(gw.app)),
                                 base_url="http://127.0.0.1") as http:
        form = await http.get("/console/login")
        answer = await http.post("/console/login", data={"csrf_token": csrf_of(form.text), "credential": token})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/overview"
    attributes = [a.strip().lower() for a in _set_cookie(answer, "portcullis_console").split(";")]
    assert {"httponly", "samesite=strict", "path=/console"} <= set(attributes)
    assert "secure" not in attributes  # a plain-HTTP listener: the browser would drop a Secure cookie


async def test_the_cookie_is_secure_when_the_admin_listener_serves_tls(
    make_gateway: GatewayFactory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    cert, key = await asyncio.to_thread(self_signed_cert, tmp_path)
    gw = await make_gateway(gateway_yaml(upstream.url, CONFIG.replace(
        "admin:\n", f"admin:\n  tls: {{cert_file: \"{cert}\", key_file: \"{key}\"}}\n", 1))
        .replace("admin: {enabled: false}\n", "", 1))
    token = await gw.admin_token("admin")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(create_admin_app(gw.app)),
                                 base_url="https://127.0.0.1") as http:
        form = await http.get("/console/login")
        assert "secure" in _set_cookie(form, "portcullis_console_login").lower()
        answer = await http.post("/console/login", data={"csrf_token": csrf_of(form.text), "credential": token})
    attributes = [a.strip().lower() for a in _set_cookie(answer, "portcullis_console").split(";")]
    assert {"secure", "httponly", "samesite=strict", "path=/console"} <= set(attributes)


async def test_the_console_cookie_does_not_authenticate_the_json_api(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await _gateway(make_gateway, upstream)
    console = await sign_in(create_admin_app(gw.app), await gw.admin_token("security"))
    answer = await console.http.get("/status")
    assert answer.status_code == 401 and answer.json()["code"] == "auth.missing_credentials"


async def test_a_bearer_token_does_not_open_a_console_page(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await _gateway(make_gateway, upstream)
    token = await gw.admin_token("security")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(create_admin_app(gw.app)),
                                 base_url="http://127.0.0.1", headers={"Authorization": f"Bearer {token}"}) as http:
        answer = await http.get("/console/overview")
    assert answer.status_code == 303 and answer.headers["location"] == "/console/login"


async def test_a_session_ends_after_the_idle_timeout_on_the_clock(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await _gateway(make_gateway, upstream)
    console = await sign_in(create_admin_app(gw.app), await gw.admin_token("admin"))
    gw.clock.advance(9 * 60)
    assert (await console.http.get("/console/overview")).status_code == 200
    gw.clock.advance(10 * 60)
    answer = await console.http.get("/console/overview")
    assert answer.status_code == 303 and answer.headers["location"] == "/console/login"


async def test_a_session_ends_at_its_lifetime_however_busy(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await _gateway(make_gateway, upstream)
    console = await sign_in(create_admin_app(gw.app), await gw.admin_token("admin"))
    for _ in range(6):
        gw.clock.advance(9 * 60)
        assert (await console.http.get("/console/overview")).status_code == 200  # 54 minutes, never idle
    gw.clock.advance(9 * 60)
    assert (await console.http.get("/console/overview")).status_code == 303


async def test_signing_in_past_max_sessions_ends_the_least_recently_used(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await _gateway(make_gateway, upstream)
    app = create_admin_app(gw.app)
    token = await gw.admin_token("admin")
    first, second = await sign_in(app, token), await sign_in(app, token)
    assert (await first.http.get("/console/overview")).status_code == 200  # second is now the least recent
    third = await sign_in(app, token)
    assert (await second.http.get("/console/overview")).status_code == 303
    assert (await first.http.get("/console/overview")).status_code == 200
    assert (await third.http.get("/console/overview")).status_code == 200


async def test_a_token_revoked_mid_session_ends_the_session_on_its_next_request(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await _gateway(make_gateway, upstream)
    app = create_admin_app(gw.app)
    token = await gw.admin_token("admin")
    console = await sign_in(app, token)
    other = await gw.admin(role="security")
    token_id = token.removeprefix("pca_")[:12]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://127.0.0.1",
                                 headers=other.headers) as api:
        assert (await api.post(f"/admin-tokens/{token_id}/revoke")).status_code == 200
    answer = await console.http.get("/console/overview")
    assert answer.status_code == 303 and answer.headers["location"] == "/console/login"
    ended = [r for r in await gw.audit_records()
             if r["class"] == "security" and r["event"]["action"] == "console.session"]
    assert [e["event"]["reason"] for e in ended] == ["revoked"]


async def test_sign_out_ends_the_session_on_the_server(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await _gateway(make_gateway, upstream)
    console = await sign_in(create_admin_app(gw.app), await gw.admin_token("admin"))
    cookie = console.http.cookies["portcullis_console"]
    answer = await console.post("/console/logout")
    assert answer.status_code == 303 and answer.headers["location"] == "/console/login"
    console.http.cookies.set("portcullis_console", cookie, path="/console")  # a copy kept by an attacker
    assert (await console.http.get("/console/overview")).status_code == 303


async def test_failed_sign_ins_share_the_api_throttle_and_are_security_events(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await _gateway(make_gateway, upstream)
    app = create_admin_app(gw.app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://127.0.0.1") as http:
        for _ in range(3):
            form = await http.get("/console/login")
            answer = await http.post("/console/login", data={"csrf_token": csrf_of(form.text),
                                                             "credential": "pca_aaaaaaaaaaaa_" + "b" * 43})
            assert answer.status_code == 401 and "Sign-in failed" in answer.text
        form = await http.get("/console/login")
        good = await gw.admin_token("admin")
        throttled = await http.post("/console/login", data={"csrf_token": csrf_of(form.text), "credential": good})
        assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) > 0
        api = await http.get("/status", headers={"Authorization": f"Bearer {good}"})
        assert api.status_code == 429  # the same budget as the API's
    events = [r["event"] for r in await gw.audit_records() if r["class"] == "security"]
    assert [(e["action"], e["outcome"]) for e in events][:4] == [("admin.auth", "refused")] * 3 + [
        ("admin.auth", "throttled")]
