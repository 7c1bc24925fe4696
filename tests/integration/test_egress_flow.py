"""Run modes, the execution lifetime and the endpoint bulkhead through the real gateway, against a real
provider on 127.0.0.1 (named through a fixed resolver, reachable through the routes' 127.0.0.0/8
exception), and through the in-process transport where a door has something of its own to say.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any

import httpx
import pytest
from aiohttp import web
from tests.conftest import Gateway, GatewayFactory, gateway_yaml

from portcullis.egress.budgets import CallContext
from portcullis.egress.resolver import StaticResolver
from portcullis.egress.run_mode import RunMode
from portcullis.egress.transport import AsyncTransport
from portcullis.gateway.runtime import serving_runtime
from portcullis.identity.principal import Principal
from portcullis.testing import catch_all, serve_app, until
from portcullis.vault import generate_master_key

TOKEN = "sk-" + "FlowT0k3n" * 4
MASTER = generate_master_key()
FULL = ("workflow:run:full",)


@dataclass
class Provider:
    port: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)  # /slow answers once it is set
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append({"path": request.path_qs, "headers": dict(request.headers)})
        if request.path.startswith("/slow"):
            self.arrived.set()
            await self.gate.wait()
        return web.json_response({"ok": True})


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    p = Provider()
    async with serve_app(catch_all(p.handle)) as p.port:
        try:
            yield p
        finally:
            p.gate.set()


def config(port: int) -> str:
    base = f'url: "http://api.partner.test:{port}'
    net = "allow_http: true, allow_networks: [127.0.0.0/8]"
    return gateway_yaml("http://127.0.0.1:9", f"""
routes:
  - {{name: health, path: /health, upstream: api, auth: none}}
egress:
  budgets: {{execution_calls: 2, execution_max_lifetime: 10m}}
  run_modes: {{full_run_requires: {{scopes_any: ["workflow:run:full"]}}}}
  priorities: {{workflows: {{wf-nightly: bulk}}}}
  routes:
    - {{name: llm, {base}", {net}, test_run: true, cost: 0.5,
       headers: {{Authorization: "Bearer {{secret:llm_key}}"}}}}
    - {{name: prod, {base}/prod", {net}}}
    - {{name: slow, {base}/slow", {net}, full_run_requires: {{roles_any: [agent]}},
       bulkhead: {{max_concurrent: 1, max_queue: 1, retry_after: 3s, header_priorities: [critical, low]}}}}
""")


@pytest.fixture
async def gw(make_gateway: GatewayFactory, provider: Provider) -> Gateway:
    return await make_gateway(config(provider.port), env={"PORTCULLIS_SECRET_KEY": MASTER},
                              resolver=StaticResolver({"api.partner.test": [[ip_address("127.0.0.1")]]}),
                              secrets={"llm_key": TOKEN})


def context(workflow: str = "wf-1", execution: str = "ex-1", **extra: str) -> dict[str, str]:
    return {"X-Workflow-Id": workflow, "X-Execution-Id": execution, **extra}


async def test_validate_only_sends_nothing_spends_nothing_and_names_what_would_happen(
    gw: Gateway, provider: Provider,
) -> None:
    key = await gw.key("agent-7", scopes=FULL)
    r = await gw.client.post("/egress/llm/v1/chat/completions?api-version=1", json={"model": "m"},
                             headers={"X-API-Key": key, "X-Run-Mode": "validate_only", **context()})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {
        "run_mode": "validate_only", "would_send": True, "route": "llm", "method": "POST",
        "url": f"http://api.partner.test:{provider.port}/v1/chat/completions",
        "checks": [{"name": "destination", "ok": True}, {"name": "full_run", "ok": True},
                   {"name": "breaker", "ok": True}, {"name": "execution_lifetime", "ok": True}],
        "spends": [{"name": "execution_calls", "amount": 1.0, "remaining": 2.0, "fits": True}],
        "headers_injected": ["authorization"], "secrets": ["llm_key"], "full_run_permitted": True,
    }
    assert TOKEN not in r.text and provider.seen == []
    gw.clock.advance(3600)  # the dry run started no execution clock ...
    real = await gw.client.get("/egress/llm/v1/models", headers={"X-API-Key": key, **context()})
    assert real.status_code == 200  # ... and spent no budget:
    assert "execution_calls=1" in real.headers.get_list("x-budget-remaining")
    records = [rec for rec in await gw.audit_records() if rec["route"] == "egress"]
    assert [rec["decision"] for rec in records] == ["validate_only", "allowed"]
    assert records[0]["egress"]["run_mode"] == "validate_only" and records[0]["egress"]["attempts"] == 0
    assert "run_mode" not in records[1]["egress"]


async def test_validate_only_reports_the_refusals_a_real_call_would_meet(gw: Gateway, provider: Provider) -> None:
    key = await gw.key("agent-7")  # no full-run scope
    for _ in range(2):
        await gw.client.get("/egress/llm/v1/models", headers={"X-API-Key": key, "X-Run-Mode": "test_run", **context()})
    r = await gw.client.get("/egress/llm/v1/models",
                            headers={"X-API-Key": key, "X-Run-Mode": "validate_only", **context()})
    doc = r.json()
    assert r.status_code == 200 and doc["would_send"] is False and doc["full_run_permitted"] is False
    assert {"name": "full_run", "ok": False, "code": "egress.run_mode_denied"} in doc["checks"]
    # the test runs spent their own counters, not the full runs' the report is about
    assert doc["spends"] == [{"name": "execution_calls", "amount": 1.0, "remaining": 2.0, "fits": True}]


async def test_a_full_run_needs_what_the_route_requires(gw: Gateway, provider: Provider) -> None:
    without = await gw.key("intern")
    refused = await gw.client.get("/egress/llm/v1/models", headers={"X-API-Key": without, **context()})
    assert refused.status_code == 403 and refused.json()["code"] == "egress.run_mode_denied"
    assert set(refused.json()) == {"type", "title", "status", "code", "request_id"}  # the reason stays in the audit
    assert provider.seen == []
    allowed = await gw.client.get("/egress/llm/v1/models", headers={"X-API-Key": await gw.key("lead", FULL),
                                                                    **context()})
    assert allowed.status_code == 200
    [record] = [rec for rec in await gw.audit_records() if rec["decision"].startswith("egress_refused")]
    assert record["decision"] == "egress_refused:run_mode:full_run_scope"


async def test_test_runs_go_only_to_routes_marked_for_them_and_spend_their_own_budget(
    gw: Gateway, provider: Provider,
) -> None:
    key = await gw.key("agent-7")  # test runs need no full-run scope
    test = {"X-API-Key": key, "X-Run-Mode": "test_run", "X-Priority": "low", **context()}
    statuses = [(await gw.client.get("/egress/llm/v1/models", headers=test)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # execution_calls: 2, counted for test runs alone
    assert all({"x-run-mode", "x-priority"}.isdisjoint(k.lower() for k in s["headers"]) for s in provider.seen)
    full = await gw.client.get("/egress/llm/v1/models", headers={"X-API-Key": await gw.key("lead", FULL),
                                                                 **context()})
    assert full.status_code == 200 and "execution_calls=1" in full.headers.get_list("x-budget-remaining")
    unmarked = await gw.client.get("/egress/prod/x", headers=test)
    assert unmarked.status_code == 403 and unmarked.json()["code"] == "egress.run_mode_denied"
    modes = [(rec["decision"], rec["egress"].get("run_mode")) for rec in await gw.audit_records()
             if rec["route"] == "egress"]
    assert modes == [("allowed", "test_run"), ("allowed", "test_run"),
                     ("egress_refused:budget:execution_calls", "test_run"), ("allowed", None),
                     ("egress_refused:run_mode:test_run_not_allowed", None)]


@pytest.mark.parametrize("mode", ["full", "VALIDATE-ONLY", "full_run, test_run"], ids=["short", "dash", "two"])
async def test_an_unknown_run_mode_is_refused_rather_than_run_in_full(gw: Gateway, provider: Provider, mode: str) -> None:
    r = await gw.client.get("/egress/llm/v1/models", headers={"X-API-Key": await gw.key("lead", FULL),
                                                              "X-Run-Mode": mode, **context()})
    assert r.status_code == 400 and r.json()["code"] == "request.malformed"
    assert provider.seen == []


async def test_calls_after_an_executions_lifetime_are_refused(gw: Gateway, provider: Provider) -> None:
    key = await gw.key("lead", FULL)
    assert (await gw.client.get("/egress/prod/a", headers={"X-API-Key": key, **context()})).status_code == 200
    gw.clock.advance(600)
    expired = await gw.client.get("/egress/prod/b", headers={"X-API-Key": key, **context()})
    assert expired.status_code == 403 and expired.json()["code"] == "budget.execution_expired"
    fresh = await gw.client.get("/egress/prod/b", headers={"X-API-Key": key, **context(execution="ex-2")})
    assert fresh.status_code == 200
    assert [s["path"] for s in provider.seen] == ["/prod/a", "/prod/b"]


async def test_a_saturated_endpoint_sheds_the_lowest_class_first_and_answers_the_rest(
    gw: Gateway, provider: Provider,
) -> None:
    key = await gw.key("agent-7", FULL, roles=("agent",))

    async def call(**headers: str) -> httpx.Response:
        return await gw.client.get("/egress/slow/x", headers={"X-API-Key": key, **headers})

    def depth(priority: str) -> float:
        metrics = gw.services.metrics.render().decode()
        line = f'portcullis_egress_queue_depth{{priority="{priority}",route="slow"}} '
        return next((float(x.split(" ")[-1]) for x in metrics.splitlines() if x.startswith(line)), 0.0)

    holder = asyncio.create_task(call(**context("wf-1", "ex-1")))
    await provider.arrived.wait()  # the one place is taken
    nightly = asyncio.create_task(call(**context("wf-nightly", "ex-2")))  # the workflow's class: bulk
    await until(lambda: depth("bulk") == 1)
    urgent = asyncio.create_task(call(**context("wf-1", "ex-3", **{"X-Priority": "critical"})))
    shed = await nightly  # the queue's one place goes to the higher class
    assert shed.status_code == 503 and shed.json()["code"] == "egress.shed" and shed.headers["retry-after"] == "3"
    refused = await call(**context("wf-1", "ex-4", **{"X-Priority": "high"}))  # not a class the route offers
    assert refused.status_code == 400
    assert not urgent.done()
    provider.gate.set()
    assert (await holder).status_code == 200 and (await urgent).status_code == 200
    metrics = gw.services.metrics.render().decode()
    assert 'portcullis_egress_shed_total{priority="bulk",reason="evicted",route="slow"} 1.0' in metrics
    assert 'portcullis_egress_queue_wait_seconds_count{priority="critical",route="slow"} 1.0' in metrics
    assert 'portcullis_egress_refusals_total{kind="shed",route="slow"} 1.0' in metrics
    assert depth("critical") == 0 and depth("bulk") == 0
    assert len([s for s in provider.seen if s["path"] == "/slow/x"]) == 2  # the shed call never left


async def test_the_transport_takes_its_run_mode_and_caller_from_its_context(gw: Gateway, provider: Provider) -> None:
    runtime = serving_runtime(gw.app)
    assert runtime.egress is not None and runtime.config.egress is not None
    url = f"http://api.partner.test:{provider.port}/v1/models"

    def client(**kwargs: Any) -> httpx.AsyncClient:
        transport = AsyncTransport(runtime.egress, runtime.config.egress,  # type: ignore[arg-type]
                                   CallContext("ex-sdk", "wf-sdk", "agent"), **kwargs)
        return httpx.AsyncClient(transport=transport)

    async with client(run_mode=RunMode.VALIDATE_ONLY) as dry:
        report = await dry.post(url, json={})
        assert report.status_code == 200 and report.json()["secrets"] == ["llm_key"]
    async with client() as anonymous:
        refused = await anonymous.get(url)  # the egress-wide requirement, and no caller to meet it
        assert refused.status_code == 403 and refused.json()["code"] == "egress.run_mode_denied"
    async with client(principal=Principal("agent", "in_process", scopes=frozenset(FULL))) as trusted:
        assert (await trusted.get(url)).status_code == 200
    async with client(run_mode=RunMode.TEST_RUN) as tests:
        assert (await tests.get(f"http://api.partner.test:{provider.port}/prod/x")).json()["code"] == \
            "egress.run_mode_denied"
    assert [s["path"] for s in provider.seen] == ["/v1/models"]


async def test_run_mode_and_lifetime_refusals_look_the_same_from_both_doors(gw: Gateway, provider: Provider) -> None:
    runtime = serving_runtime(gw.app)
    assert runtime.egress is not None and runtime.config.egress is not None
    key = await gw.key("agent", FULL)
    transport = AsyncTransport(runtime.egress, runtime.config.egress, CallContext("ex-sdk", "wf-sdk", "agent"),
                               principal=Principal("agent", "in_process", scopes=frozenset(FULL)))
    async with httpx.AsyncClient(transport=transport) as sdk:
        async def both(path: str, **headers: str) -> list[tuple[int, str | None]]:
            http = await gw.client.get(f"/egress/prod{path}", headers={"X-API-Key": key, **context("wf-http", "ex-http"),
                                                                       **headers})
            inproc = await sdk.get(f"http://api.partner.test:{provider.port}/prod{path}", headers=headers)
            return [(r.status_code, r.json().get("code")) for r in (http, inproc)]

        assert await both("/a", **{"X-Run-Mode": "test_run"}) == [(403, "egress.run_mode_denied")] * 2
        assert await both("/a", **{"X-Run-Mode": "everything"}) == [(400, "request.malformed")] * 2
        assert await both("/a") == [(200, None)] * 2
        gw.clock.advance(600)
        assert await both("/b") == [(403, "budget.execution_expired")] * 2
