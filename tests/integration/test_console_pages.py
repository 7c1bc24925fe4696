"""The console's pages against the roles: each console route declares the permission of the API route it
mirrors, each role reaches exactly those pages and actions, and everything the console answers carries
the strict CSP and no inline script."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest
from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml
from tests.console_kit import sign_in
from tests.integration.test_admin_roles import CONFIG, EXPECTED, ROLES

from portcullis.admin.app import create_admin_app
from portcullis.admin.console.render import TEMPLATES_DIR
from portcullis.admin.guard import PUBLIC, route_permission

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

# Each console route and the API route whose permission it must declare (the API's matrix is the promise).
MIRRORS: dict[str, str] = {
    "GET /console/overview": "GET /status",
    "GET /console/overview.json": "GET /metrics",
    "GET /console/budgets": "GET /egress/budgets",
    "GET /console/breakers": "GET /egress/breakers",
    "POST /console/breakers/{route}/{action}": "POST /egress/breakers/{route}/{action}",
    "GET /console/anomalies": "GET /anomalies",
    "GET /console/audit": "GET /audit/records",
    "GET /console/audit/consumers/{consumer}": "GET /audit/consumers/{consumer}/records",
    "POST /console/audit/verify": "POST /audit/verify",
    "GET /console/keys": "GET /keys",
    "POST /console/keys/{key_id}/disable": "POST /keys/{key_id}/disable",
    "POST /console/keys/{key_id}/enable": "POST /keys/{key_id}/enable",
    "POST /console/keys/{key_id}/rotate": "POST /keys/{key_id}/rotate",
    "GET /console/blocks": "GET /blocks",
    "POST /console/blocks": "POST /blocks",
    "POST /console/blocks/{block_id}/lift": "DELETE /blocks/{block_id}",
}
PUBLIC_CONSOLE = {"GET /console", "GET /console/login", "POST /console/login", "POST /console/logout",
                  "GET /console/static/{name}"}


def _config() -> str:
    return CONFIG.replace("admin:\n  enabled: false\n", "admin:\n")


async def test_every_console_route_declares_the_permission_of_the_api_route_it_mirrors(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, _config()).replace("admin: {enabled: false}\n", "", 1))
    app = create_admin_app(gw.app)
    api = {f"{m} {r.path}": route_permission(r) for r in app.state.routes for m in r.methods}
    console = {f"{m} {r.path}": route_permission(r) for r in app.state.console_routes for m in r.methods}
    assert set(console) == set(MIRRORS) | PUBLIC_CONSOLE
    assert {name for name, p in console.items() if p == PUBLIC} == PUBLIC_CONSOLE
    assert {name: console[name] for name in MIRRORS} == {name: api[mirror] for name, mirror in MIRRORS.items()}


async def test_console_routes_are_not_in_the_openapi_document(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, _config()).replace("admin: {enabled: false}\n", "", 1))
    async with await gw.admin("security") as api:
        paths = (await api.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p.startswith("/console")]


@pytest.mark.parametrize("role", ROLES)
async def test_each_role_reaches_exactly_the_console_pages_its_api_routes_allow(
    make_gateway: GatewayFactory, upstream: UpstreamServer, role: str
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, _config()).replace("admin: {enabled: false}\n", "", 1))
    console = await sign_in(create_admin_app(gw.app), await gw.admin_token(role, consumers=("acme",)))
    reached, refused = set(), set()
    for name in MIRRORS:
        method, template = name.split(" ", 1)
        path = template.replace("{action}", "reset").replace("{route}", "partner").replace("{consumer}", "acme")
        path = path.replace("{key_id}", "nosuch000000").replace("{block_id}", "nosuch")
        answer = await (console.post(path) if method == "POST" else console.http.get(path))
        assert answer.status_code not in (401, 500), (name, answer.text)
        forbidden = answer.status_code == 403 and "may not do this" in answer.text
        (refused if forbidden else reached).add(name)
    assert reached == {name for name, mirror in MIRRORS.items() if role in EXPECTED[mirror]}
    denials = [r["event"] for r in await gw.audit_records()
               if r["class"] == "security" and r["event"]["outcome"] == "denied"]
    assert len(denials) == len(refused) and all(d["role"] == role for d in denials)


async def test_a_refused_page_names_the_missing_permission(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, _config()).replace("admin: {enabled: false}\n", "", 1))
    console = await sign_in(create_admin_app(gw.app), await gw.admin_token("developer"))
    answer = await console.http.get("/console/breakers")
    assert answer.status_code == 403
    assert "Your role (developer) may not do this: it needs the breakers.read permission." in answer.text


async def test_every_console_answer_carries_the_strict_csp_and_security_headers(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, _config()).replace("admin: {enabled: false}\n", "", 1))
    app = create_admin_app(gw.app)
    console = await sign_in(app, await gw.admin_token("security"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://127.0.0.1") as anonymous:
        answers = [
            await anonymous.get("/console/login"), await anonymous.get("/console"),
            await anonymous.get("/console/overview"), await anonymous.get("/console/static/console.js"),
            await anonymous.get("/console/static/console.css"), await anonymous.get("/console/nothing-here"),
            await anonymous.get("/console/overview", headers={"Host": "evil.example"}),
            await console.http.get("/console/overview"), await console.http.get("/console/audit"),
            await console.http.get("/console/overview.json"), await console.post("/console/blocks", csrf="bad"),
            await console.post("/console/logout"),
        ]
    for answer in answers:
        h = answer.headers
        assert (h["content-security-policy"], h["referrer-policy"], h["x-content-type-options"]) == (
            CSP, "no-referrer", "nosniff"), answer.request.url
        assert h["cache-control"] == "no-store" and h["x-frame-options"] == "DENY"


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append(dict(attrs))
        self.inline += [f"{tag} {name}" for name, _ in attrs if name.startswith("on") or name == "style"]
        if tag == "style":
            self.inline.append("style element")


@pytest.mark.parametrize("template", sorted(p.name for p in TEMPLATES_DIR.glob("*.html")))
def test_no_template_has_an_inline_script_handler_or_style(template: str) -> None:
    markup = _Markup()
    markup.feed((TEMPLATES_DIR / template).read_text())
    assert markup.inline == []
    assert all(s.get("src", "").startswith("/console/static/") for s in markup.scripts)
    assert not re.search(r"javascript:", (TEMPLATES_DIR / template).read_text(), re.IGNORECASE)
