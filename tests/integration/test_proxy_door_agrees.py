"""The proxy door answers an egress decision exactly as the HTTP door does: status, problem code,
``Retry-After``, the budget's name, and the audit decision.

Each case goes once through ``/egress/<route>/…`` (API key, context headers) and once through the
proxy door as an absolute-form request (the key and context in ``Proxy-Authorization``), over the
same gateway and executor, each door with its own workflow and execution so neither spends the
other's budget or rate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiohttp import web
from tests.conftest import GatewayFactory, raw_request
from tests.proxy_kit import ProxyGateway, proxy_gateway

from portcullis.controls.model import BlockKind
from portcullis.egress.breaker import BreakerState
from portcullis.egress.budgets import CallContext
from portcullis.egress.transport import AsyncTransport
from portcullis.gateway.runtime import serving_runtime
from portcullis.testing import catch_all, serve_app


@dataclass(frozen=True)
class Seen:
    status: int
    code: str | None
    retry_after: str | None
    detail: str | None


def seen(response: httpx.Response) -> Seen:
    problem = response.headers.get("content-type", "").startswith("application/problem+json")
    body: dict[str, Any] = response.json() if problem else {}
    return Seen(response.status_code, body.get("code"), response.headers.get("retry-after"), body.get("detail"))


@pytest.fixture
async def pg(make_gateway: GatewayFactory) -> AsyncIterator[tuple[ProxyGateway, int]]:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async with serve_app(catch_all(ok)) as port:
        routes = [
            {"name": "partner", "url": f"http://api.partner.test:{port}", "allow_http": True,
             "allow_networks": ["127.0.0.0/8"], "methods": ["GET"], "paths": ["/v1/**"], "calls_per_workflow_day": 1},
            {"name": "limited", "url": f"http://api.partner.test:{port}/limited", "allow_http": True,
             "allow_networks": ["127.0.0.0/8"], "rate_limits": ["1/minute"], "rate_limit_per_workflow": True},
            {"name": "internal", "url": "http://metadata.partner.test", "allow_http": True},
            {"name": "fragile", "url": f"http://api.partner.test:{port}/fragile", "allow_http": True,
             "allow_networks": ["127.0.0.0/8"]},
        ]
        answers = {"api.partner.test": [["127.0.0.1"]], "metadata.partner.test": [["169.254.169.254"]]}
        async with proxy_gateway(make_gateway, routes, answers=answers) as door:
            yield door, port


async def _both(door: ProxyGateway, method: str, route: str, path: str, url: str) -> tuple[Seen, Seen]:
    http = await door.gw.client.request(method, f"/egress/{route}{path}", headers={
        "X-API-Key": door.key, "X-Workflow-Id": "wf-http", "X-Execution-Id": "ex-http"})
    async with httpx.AsyncClient(proxy=door.proxy_url(workflow="wf-proxy", execution="ex-proxy"),
                                 trust_env=False) as client:
        proxied = await client.request(method, url)
    return seen(http), seen(proxied)


async def _decisions(door: ProxyGateway, workflow: str) -> list[str]:
    return [r["decision"] for r in await door.gw.audit_records()
            if r["route"] == "egress" and (r.get("egress") or {}).get("workflow_id") == workflow]


async def test_every_decision_is_answered_alike_by_the_http_door_and_the_proxy_door(
    pg: tuple[ProxyGateway, int],
) -> None:
    door, port = pg
    base = f"http://api.partner.test:{port}"
    cases = [
        ("POST", "partner", "/v1/x", f"{base}/v1/x", 403),
        ("GET", "partner", "/admin", f"{base}/admin", 403),
        ("GET", "internal", "/latest", "http://metadata.partner.test/latest", 403),
        ("GET", "partner", "/v1/x", f"{base}/v1/x", 200),
        ("GET", "partner", "/v1/x", f"{base}/v1/x", 429),  # the endpoint's calls per workflow and day
        ("GET", "limited", "/a", f"{base}/limited/a", 200),
        ("GET", "limited", "/a", f"{base}/limited/a", 429),  # the route's rate, per workflow
    ]
    for method, route, path, url, status in cases:
        http, proxied = await _both(door, method, route, path, url)
        assert http == proxied, (route, path)
        assert http.status == status, (route, path)
    serving_runtime(door.gw.app).egress.breaker("fragile").force(BreakerState.FORCED_OPEN)  # type: ignore[union-attr]
    broken = await _both(door, "GET", "fragile", "/a", f"{base}/fragile/a")
    assert broken[0] == broken[1] and broken[0].code == "upstream.circuit_open"
    await door.gw.services.controls.add_block(BlockKind.USER, "alice", reason="incident", actor="test")
    blocked = await _both(door, "GET", "partner", "/v1/x", f"{base}/v1/x")
    assert blocked[0] == blocked[1] and blocked[0].code == "access.blocked"
    http_decisions, proxy_decisions = await _decisions(door, "wf-http"), await _decisions(door, "wf-proxy")
    assert http_decisions == proxy_decisions  # the block's id included: one block, both doors
    assert proxy_decisions[-1].startswith("blocked:") and proxy_decisions[-2] == "egress_refused:circuit_open:fragile"
    assert proxy_decisions[:7] == [
        "egress_refused:method_not_allowed", "egress_refused:path_not_allowed", "egress_refused:address_link_local",
        "allowed", "egress_refused:budget:endpoint_calls:partner", "allowed",
        "egress_refused:rate_limited:egress:limited",
    ]


async def test_a_full_audit_queue_sheds_calls_and_tunnels_alike_on_every_door(make_gateway: GatewayFactory) -> None:
    # audit.when_full: shed (the default) means nothing is served that cannot be audited: the HTTP
    # door, the in-process transport, the proxy door's absolute-form calls and its tunnels all refuse.
    # A batch bigger than the queue and an hour between flushes: the queue stays full until flushed.
    audit = ("audit: {file: audit.jsonl, spill_file: audit.spill.jsonl, flush_interval: 1h, batch_size: 1000,"
             " queue_max: 3, when_full: shed}")
    sent: list[str] = []

    async def ok(request: web.Request) -> web.Response:
        sent.append(request.path)
        return web.json_response({"ok": True})

    async with serve_app(catch_all(ok)) as port:
        routes = [{"name": "partner", "url": f"http://api.partner.test:{port}", "allow_http": True,
                   "allow_networks": ["127.0.0.0/8"]},
                  {"name": "secure", "url": "https://tls.partner.test", "allow_networks": ["127.0.0.0/8"]}]
        answers = {"api.partner.test": [["127.0.0.1"]], "tls.partner.test": [["127.0.0.1"]]}
        async with proxy_gateway(make_gateway, routes, answers=answers, audit=audit) as door:

            async def fill() -> None:
                # A record lost to the full queue wakes the writer, which empties it: fill it again
                # before each door's call.
                while not door.gw.services.audit.full:
                    await door.gw.client.get("/health")  # each request, answered or not, is one record

            url = f"http://api.partner.test:{port}/v1/x"
            await fill()
            http = seen(await door.gw.client.get("/egress/partner/v1/x", headers={
                "X-API-Key": door.key, "X-Workflow-Id": "wf-http", "X-Execution-Id": "ex-http"}))
            await fill()
            async with httpx.AsyncClient(proxy=door.proxy_url(), trust_env=False) as client:
                proxied = seen(await client.get(url))
            runtime = serving_runtime(door.gw.app)
            assert runtime.egress is not None and runtime.config.egress is not None
            transport = AsyncTransport(runtime.egress, runtime.config.egress, CallContext("ex-sdk", "wf-sdk", "alice"))
            await fill()
            async with httpx.AsyncClient(transport=transport) as sdk:
                in_process = seen(await sdk.get(url))
            await fill()
            tunnel = await raw_request(door.port, (  # to an https route: a tunnel admitted once, spliced
                "CONNECT tls.partner.test:443 HTTP/1.1\r\nHost: tls.partner.test:443\r\n"
                f"Proxy-Authorization: {door.basic().decode()}\r\n\r\n").encode())
    assert http == proxied == in_process == Seen(503, "service.unavailable", "1", None), (http, proxied, in_process)
    assert tunnel.startswith(b"HTTP/1.1 503") and b"\r\nretry-after: 1\r\n" in tunnel.lower()
    assert sent == []
