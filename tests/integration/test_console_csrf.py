"""CSRF on the console: every state change is a POST carrying the session's synchronizer token from a
same-origin page; anything else is refused with 403, changes nothing, and is a security event."""

from __future__ import annotations

import httpx
import pytest
from tests.conftest import Gateway, GatewayFactory, UpstreamServer, gateway_yaml
from tests.console_kit import ConsoleClient, sign_in

from portcullis.admin.app import create_admin_app

CONFIG = """
routes:
  - {name: orders, path: "/orders/{order_id}", upstream: api}
egress:
  routes:
    - {name: partner, url: "http://127.0.0.1:9", allow_http: true, allow_networks: [127.0.0.0/8]}
"""


async def _signed_in(make_gateway: GatewayFactory, upstream: UpstreamServer) -> tuple[Gateway, ConsoleClient]:
    gw = await make_gateway(gateway_yaml(upstream.url, CONFIG).replace("admin: {enabled: false}\n", "", 1))
    return gw, await sign_in(create_admin_app(gw.app), await gw.admin_token("admin"))


def _state(gw: Gateway) -> str:
    egress = gw.runtime.egress
    assert egress is not None
    return egress.breakers()["partner"].state.value


async def _csrf_events(gw: Gateway, reason: str) -> list[dict[str, object]]:
    return [r["event"] for r in await gw.audit_records()
            if r["class"] == "security" and r["event"]["action"] == f"console.{reason}"]


async def test_a_post_with_the_sessions_token_changes_state(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw, console = await _signed_in(make_gateway, upstream)
    answer = await console.post("/console/breakers/partner/open",
                                headers={"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/breakers?changed=partner"
    assert _state(gw) == "forced_open"
    acts = [r["event"] for r in await gw.audit_records() if r["class"] == "security"
            and r["event"]["action"] == "breaker.force"]
    assert [(a["outcome"], a["target"], a["role"]) for a in acts] == [("ok", "route=partner,action=open", "admin")]


@pytest.mark.parametrize("token", [
    pytest.param("", id="OWASP-CSRF-missing-token"),
    pytest.param("x" * 43, id="OWASP-CSRF-wrong-token"),
])
async def test_a_post_without_the_right_token_is_refused_and_recorded(
    make_gateway: GatewayFactory, upstream: UpstreamServer, token: str
) -> None:
    gw, console = await _signed_in(make_gateway, upstream)
    answer = await console.post("/console/breakers/partner/open", {"do": "open"}, csrf=token)
    assert answer.status_code == 403 and "stale or was not made by this session" in answer.text
    assert _state(gw) == "closed"
    assert [e["outcome"] for e in await _csrf_events(gw, "csrf")] == ["refused"]


async def test_a_token_from_another_session_is_refused(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw, console = await _signed_in(make_gateway, upstream)
    other = await sign_in(create_admin_app(gw.app), await gw.admin_token("admin"))
    answer = await console.post("/console/breakers/partner/open", csrf=other.csrf)
    assert answer.status_code == 403
    assert _state(gw) == "closed"


@pytest.mark.parametrize("headers", [
    pytest.param({"Origin": "https://evil.example"}, id="OWASP-CSRF-cross-origin"),
    pytest.param({"Origin": "null"}, id="OWASP-CSRF-opaque-origin"),
    pytest.param({"Sec-Fetch-Site": "cross-site"}, id="fetch-metadata-cross-site"),
])
async def test_a_cross_site_post_is_refused_even_with_the_token(
    make_gateway: GatewayFactory, upstream: UpstreamServer, headers: dict[str, str]
) -> None:
    gw, console = await _signed_in(make_gateway, upstream)
    answer = await console.post("/console/breakers/partner/open", headers=headers)
    assert answer.status_code == 403 and "not sent from the console" in answer.text
    assert _state(gw) == "closed"
    assert [e["outcome"] for e in await _csrf_events(gw, "origin")] == ["refused"]


async def test_a_get_never_changes_state(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw, console = await _signed_in(make_gateway, upstream)
    answer = await console.http.get("/console/breakers/partner/open")
    assert answer.status_code == 405
    assert _state(gw) == "closed"


@pytest.mark.parametrize("content", [
    pytest.param({"content": b"csrf_token=a&csrf_token=b", "type": "application/x-www-form-urlencoded"},
                 id="repeated-field"),
    pytest.param({"content": b"x=" + b"a" * 20_000, "type": "application/x-www-form-urlencoded"}, id="oversized"),
    pytest.param({"content": b"--b\r\n\r\n", "type": "multipart/form-data; boundary=b"}, id="multipart"),
])
async def test_a_form_the_console_does_not_read_is_refused(
    make_gateway: GatewayFactory, upstream: UpstreamServer, content: dict[str, object]
) -> None:
    gw, console = await _signed_in(make_gateway, upstream)
    answer = await console.http.post("/console/breakers/partner/open", content=content["content"],  # type: ignore[arg-type]
                                      headers={"content-type": str(content["type"])})
    assert answer.status_code == 400
    assert _state(gw) == "closed"


async def test_sign_in_needs_the_login_forms_own_token(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, CONFIG).replace("admin: {enabled: false}\n", "", 1))
    token = await gw.admin_token("admin")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(create_admin_app(gw.app)),
                                 base_url="http://127.0.0.1") as http:
        await http.get("/console/login")  # the cookie half of the double submit
        answer = await http.post("/console/login", data={"csrf_token": "forged", "credential": token})
    assert answer.status_code == 403 and "portcullis_console" not in answer.headers.get("set-cookie", "")
