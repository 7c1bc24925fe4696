"""Attacks on the egress flow controls: choosing one's own run mode or priority class, and reading
secrets through a dry run; and the legitimate traffic those defences let through.

The gateway's door reads ``X-Run-Mode`` and ``X-Priority``; a backend that folds header names as
CGI does (``X_Run_Mode`` is ``x-run-mode``, the reason nginx drops underscored names by default,
``underscores_in_headers off``) would read another spelling than the gateway, so every spelling
counts as a value and two values are refused, never one read here and another elsewhere. Neither
header reaches the provider. A real provider on 127.0.0.1 records what arrives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from ipaddress import ip_address
from typing import Any

import pytest
from aiohttp import web
from tests.conftest import Gateway, GatewayFactory, gateway_yaml

from portcullis.egress.resolver import StaticResolver
from portcullis.testing import catch_all, serve_app
from portcullis.vault import generate_master_key

TOKEN = "sk-" + "Att4ckT0k3n" * 4
MASTER = generate_master_key()
CONTEXT = [("X-Workflow-Id", "wf-1"), ("X-Execution-Id", "ex-1")]


@pytest.fixture
async def provider() -> AsyncIterator[tuple[int, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"ok": True})

    async with serve_app(catch_all(handle)) as port:
        yield port, seen


@pytest.fixture
async def gw(make_gateway: GatewayFactory, provider: tuple[int, list[dict[str, str]]]) -> Gateway:
    port, _ = provider
    net = f'url: "http://api.partner.test:{port}", allow_http: true, allow_networks: [127.0.0.0/8]'
    return await make_gateway(gateway_yaml("http://127.0.0.1:9", f"""
routes:
  - {{name: health, path: /health, upstream: api, auth: none}}
egress:
  run_modes: {{full_run_requires: {{scopes_any: ["workflow:run:full"]}}}}
  routes:
    - {{name: llm, {net}, test_run: true, headers: {{Authorization: "Bearer {{secret:llm_key}}"}},
       bulkhead: {{max_concurrent: 4, header_priorities: [low]}}}}
    - {{name: prod, {net}}}
"""), env={"PORTCULLIS_SECRET_KEY": MASTER}, resolver=StaticResolver({"api.partner.test": [[ip_address("127.0.0.1")]]}),
        secrets={"llm_key": TOKEN})


async def send(gw: Gateway, route: str, headers: list[tuple[str, str]], scopes: tuple[str, ...] = ()) -> Any:
    key = await gw.key("agent", scopes)
    return await gw.client.get(f"/egress/{route}/v1/x", headers=[("X-API-Key", key), *CONTEXT, *headers])


@pytest.mark.parametrize(("route", "headers", "status", "code"), [
    # nginx underscores_in_headers / CGI name folding: a second spelling is a second value
    ("llm", [("X-Run-Mode", "test_run"), ("X_Run_Mode", "full_run")], 400, "request.malformed"),
    # RFC 9110 section 5.3: a repeated field is a list; which one counts must not be a guess
    ("llm", [("X-Run-Mode", "test_run"), ("X-Run-Mode", "full_run")], 400, "request.malformed"),
    ("llm", [("X-Run-Mode", "test_run, full_run")], 400, "request.malformed"),
    # OWASP-API5: a caller choosing a class the route does not offer (jumping the queue)
    ("llm", [("X-Run-Mode", "test_run"), ("X-Priority", "critical")], 400, "request.malformed"),
    ("llm", [("X-Run-Mode", "test_run"), ("X-Priority", "low"), ("X_Priority", "critical")], 400,
     "request.malformed"),
    # OWASP-API5: a test run to get around the full-run requirement of a route not marked for tests
    ("prod", [("X-Run-Mode", "test_run")], 403, "egress.run_mode_denied"),
    # a full run without the scope, whatever the spelling of the mode
    ("prod", [("X-Run-Mode", "FULL_RUN")], 403, "egress.run_mode_denied"),
], ids=["underscore-variant", "repeated", "list-value", "priority-jump", "priority-variant", "test-run-bypass",
        "full-run-without-scope"])
async def test_a_caller_cannot_pick_a_mode_or_class_the_route_does_not_give_it(
    gw: Gateway, provider: tuple[int, list[dict[str, str]]], route: str, headers: list[tuple[str, str]],
    status: int, code: str,
) -> None:
    _, seen = provider
    r = await send(gw, route, headers)
    assert (r.status_code, r.json()["code"]) == (status, code)
    assert seen == []


async def test_a_dry_run_names_the_secret_but_never_shows_it(gw: Gateway, provider: tuple[int, list[dict[str, str]]]) -> None:
    _, seen = provider
    r = await send(gw, "llm", [("X-Run-Mode", "validate_only")])
    assert r.status_code == 200 and r.json()["secrets"] == ["llm_key"]
    assert TOKEN not in r.text and "Bearer" not in r.text
    assert seen == []


@pytest.mark.parametrize(("route", "headers", "scopes"), [
    ("llm", [("X-Run-Mode", "test_run"), ("X-Priority", "low")], ()),
    ("llm", [("x-run-mode", "Test_Run")], ()),
    ("prod", [], ("workflow:run:full",)),
    ("prod", [("X-Run-Mode", "full_run")], ("workflow:run:full",)),
], ids=["test-run-low-class", "any-case", "full-run-by-default", "full-run-named"])
async def test_legitimate_modes_and_classes_reach_the_provider_without_the_headers(
    gw: Gateway, provider: tuple[int, list[dict[str, str]]], route: str, headers: list[tuple[str, str]],
    scopes: tuple[str, ...],
) -> None:
    _, seen = provider
    r = await send(gw, route, headers, scopes)
    assert r.status_code == 200
    [arrived] = seen
    assert {"x-run-mode", "x-priority"}.isdisjoint(name.lower().replace("_", "-") for name in arrived)
