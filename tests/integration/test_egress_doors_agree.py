"""The same egress decision looks the same from every door: status, problem code, the headers that
say when to come back or how much is left, the audit decision and the metric.

Each case is sent once through the HTTP door (``/egress/<route>/…`` with an API key) and once
through the in-process transport, over the same executor (one config, one set of counters), each
door with its own workflow and execution so neither spends the other's budget or rate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

import httpx
import pytest
from aiohttp import web
from tests.conftest import Gateway, GatewayFactory, gateway_yaml

from portcullis.controls.model import BlockKind
from portcullis.egress.breaker import BreakerState
from portcullis.egress.budgets import CallContext
from portcullis.egress.resolver import StaticResolver
from portcullis.egress.transport import AsyncTransport
from portcullis.gateway.runtime import serving_runtime
from portcullis.testing import catch_all, serve_app


@pytest.fixture
async def provider() -> AsyncIterator[int]:
    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async with serve_app(catch_all(handle)) as port:
        yield port


def config(port: int) -> str:
    return gateway_yaml("http://127.0.0.1:9", f"""
routes:
  - {{name: health, path: /health, upstream: api, auth: none}}
egress:
  routes:
    - {{name: partner, url: "http://api.partner.test:{port}", allow_http: true, allow_networks: [127.0.0.0/8],
       methods: [GET], paths: ["/v1/**"], calls_per_workflow_day: 1}}
    - {{name: limited, url: "http://api.partner.test:{port}/limited", allow_http: true, allow_networks: [127.0.0.0/8],
       rate_limits: ["1/minute"], rate_limit_per_workflow: true}}
    - {{name: internal, url: "http://metadata.partner.test", allow_http: true}}
    - {{name: fragile, url: "http://api.partner.test:{port}/fragile", allow_http: true, allow_networks: [127.0.0.0/8]}}
    - {{name: gone, url: "http://api.partner.test:9", allow_http: true, allow_networks: [127.0.0.0/8],
       retry: {{max_attempts: 1}}}}
""")


@dataclass(frozen=True)
class Seen:
    status: int
    code: str | None
    retry_after: str | None
    detail: str | None


def seen(response: httpx.Response) -> Seen:
    body: dict[str, Any] = response.json() if response.headers.get("content-type", "").startswith(
        "application/problem+json") else {}
    return Seen(response.status_code, body.get("code"), response.headers.get("retry-after"), body.get("detail"))


class Doors:
    """One call, sent through both doors, each with its own context."""

    def __init__(self, gw: Gateway, key: str, port: int) -> None:
        self.gw = gw
        self.key = key
        runtime = serving_runtime(gw.app)
        assert runtime.egress is not None and runtime.config.egress is not None
        self.executor = runtime.egress
        self.transport = AsyncTransport(runtime.egress, runtime.config.egress, CallContext("ex-sdk", "wf-sdk", "agent"),
                                        audit=gw.services.audit)
        self.sdk = httpx.AsyncClient(transport=self.transport)
        self.port = port

    async def both(self, method: str, route: str, path: str, url: str) -> tuple[Seen, Seen]:
        http = await self.gw.client.request(method, f"/egress/{route}{path}", headers={
            "X-API-Key": self.key, "X-Workflow-Id": "wf-http", "X-Execution-Id": "ex-http"})
        sdk = await self.sdk.request(method, url)
        return seen(http), seen(sdk)

    async def decisions(self, workflow: str) -> list[str]:
        return [r["decision"] for r in await self.gw.audit_records()
                if r["route"] == "egress" and (r.get("egress") or {}).get("workflow_id") == workflow]


@pytest.fixture
async def doors(make_gateway: GatewayFactory, provider: int) -> AsyncIterator[Doors]:
    gw = await make_gateway(config(provider), resolver=StaticResolver({
        "api.partner.test": [[ip_address("127.0.0.1")]],
        "metadata.partner.test": [[ip_address("169.254.169.254")]],
    }))
    d = Doors(gw, await gw.key("agent"), provider)
    yield d
    await d.sdk.aclose()


async def test_every_refusal_and_failure_is_answered_alike_by_the_http_door_and_the_transport(doors: Doors) -> None:
    base = f"http://api.partner.test:{doors.port}"
    cases: list[tuple[str, str, str, str, Seen]] = [
        ("POST", "partner", "/v1/x", f"{base}/v1/x", Seen(403, "egress.destination_denied", None, None)),
        ("GET", "partner", "/admin", f"{base}/admin", Seen(403, "egress.destination_denied", None, None)),
        ("GET", "internal", "/latest", "http://metadata.partner.test/latest",
         Seen(403, "egress.destination_denied", None, None)),
        ("GET", "partner", "/v1/x", f"{base}/v1/x", Seen(200, None, None, None)),
        ("GET", "partner", "/v1/x", f"{base}/v1/x", Seen(429, "budget.exhausted", None, "Exhausted: endpoint_calls:partner.")),
    ]
    for method, route, path, url, expected in cases:
        http, sdk = await doors.both(method, route, path, url)
        assert http == sdk, (route, path)
        assert (http.status, http.code) == (expected.status, expected.code), (route, path)
    assert await doors.decisions("wf-http") == await doors.decisions("wf-sdk") == [
        "egress_refused:method_not_allowed", "egress_refused:path_not_allowed", "egress_refused:address_link_local",
        "allowed", "egress_refused:budget:endpoint_calls:partner",
    ]


async def test_limits_breakers_blocks_and_provider_failures_agree_too(doors: Doors) -> None:
    base = f"http://api.partner.test:{doors.port}"
    first = await doors.both("GET", "limited", "/a", f"{base}/limited/a")
    assert first == (Seen(200, None, None, None), Seen(200, None, None, None))
    limited = await doors.both("GET", "limited", "/a", f"{base}/limited/a")
    assert limited[0] == limited[1] and limited[0].status == 429 and limited[0].retry_after is not None
    doors.executor.breaker("fragile").force(BreakerState.FORCED_OPEN)
    broken = await doors.both("GET", "fragile", "/a", f"{base}/fragile/a")
    assert broken[0] == broken[1] and broken[0].code == "upstream.circuit_open"
    gone = await doors.both("GET", "gone", "/a", "http://api.partner.test:9/a")
    assert gone[0] == gone[1] and gone[0].status == 502
    metrics = doors.gw.services.metrics.render().decode()
    assert 'portcullis_egress_refusals_total{kind="rate_limited",route="limited"} 2.0' in metrics
    assert 'portcullis_egress_refusals_total{kind="circuit_open",route="fragile"} 2.0' in metrics
    assert 'portcullis_egress_calls_total{route="gone",status="5xx"} 2.0' in metrics
    await doors.gw.services.controls.add_block(BlockKind.USER, "agent", reason="incident", actor="test")
    blocked = await doors.both("GET", "fragile", "/a", f"{base}/fragile/a")
    assert blocked[0] == blocked[1] and blocked[0].code == "access.blocked"
    http_decisions, sdk_decisions = await doors.decisions("wf-http"), await doors.decisions("wf-sdk")
    assert [d.split(":")[0] for d in http_decisions] == [d.split(":")[0] for d in sdk_decisions]
    assert http_decisions[-1].startswith("blocked:") and http_decisions[-2] == "upstream_error:egress_unreachable"


async def test_a_url_no_route_covers_is_refused_as_an_unknown_route_is(doors: Doors) -> None:
    http = await doors.gw.client.get("/egress/nowhere/x", headers={
        "X-API-Key": doors.key, "X-Workflow-Id": "wf-http", "X-Execution-Id": "ex-http"})
    sdk = await doors.sdk.get("http://169.254.169.254/latest/meta-data/")
    assert seen(http) == seen(sdk) == Seen(403, "egress.destination_denied", None, None)
    metrics = doors.gw.services.metrics.render().decode()
    assert 'portcullis_egress_refusals_total{kind="unknown_route",route=""} 2.0' in metrics
