"""The egress door on the gateway: ``/egress/<route>/<path>``, authenticated like any ingress route.

The third-party API is a real server on 127.0.0.1, named through a fixed resolver and reachable
only through the route's explicit 127.0.0.0/8 exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from ipaddress import ip_address
from typing import Any

import pytest
from aiohttp import web
from tests.conftest import PEPPER, GatewayFactory, gateway_yaml

from portcullis.egress.resolver import StaticResolver
from portcullis.testing import ManualClock, catch_all, serve_app
from portcullis.vault import generate_master_key

TOKEN = "ghp_" + "D00rT0k3n" * 4
MASTER = generate_master_key()


@pytest.fixture
async def provider() -> AsyncIterator[tuple[int, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append({"method": request.method, "path": request.path_qs, "headers": dict(request.headers),
                     "body": await request.read()})
        return web.json_response({"ok": True}, headers={"X-Provider": "yes"})

    async with serve_app(catch_all(handle)) as port:
        yield port, seen


def config(port: int, budgets: str = "{execution_calls: 3}") -> str:
    return gateway_yaml("http://127.0.0.1:9", f"""
routes:
  - {{name: health, path: /health, upstream: api, auth: none}}
egress:
  budgets: {budgets}
  routes:
    - name: partner
      url: "http://api.partner.test:{port}"
      allow_http: true
      allow_networks: [127.0.0.0/8]
      headers: {{Authorization: "Bearer {{secret:partner_token}}"}}
""")


CONTEXT = {"X-Workflow-Id": "wf-1", "X-Execution-Id": "ex-1"}


async def door(make_gateway: GatewayFactory, port: int, *, clock: ManualClock | None = None, **kwargs: Any) -> Any:
    return await make_gateway(
        config(port, **kwargs), env={"PORTCULLIS_SECRET_KEY": MASTER}, clock=clock,
        resolver=StaticResolver({"api.partner.test": [[ip_address("127.0.0.1")]]}),
        secrets={"partner_token": TOKEN},
    )


async def test_an_authenticated_call_reaches_the_provider_with_the_vault_credential(
    make_gateway: GatewayFactory, provider: tuple[int, list[dict[str, Any]]]
) -> None:
    port, seen = provider
    gw = await door(make_gateway, port)
    key = await gw.key("agent-7")
    r = await gw.client.post("/egress/partner/v1/issues?labels=bug", json={"title": "t"},
                             headers={"X-API-Key": key, **CONTEXT})
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert r.headers["x-provider"] == "yes" and r.headers["x-egress-attempts"] == "1"
    assert "execution_calls=2" in r.headers.get_list("x-budget-remaining")
    assert r.headers["x-content-type-options"] == "nosniff"  # the gateway's response hygiene applies
    [call] = seen
    assert call["path"] == "/v1/issues?labels=bug" and call["body"] == b'{"title":"t"}'
    assert call["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert "X-API-Key" not in call["headers"] and "X-Workflow-Id" not in call["headers"]
    assert TOKEN not in r.text
    [record] = [rec for rec in await gw.audit_records() if rec["route"] == "egress"]
    assert (record["consumer_id"], record["status"], record["upstream_status"]) == ("agent-7", 200, 200)
    assert record["egress"] == {
        "route": "partner", "workflow_id": "wf-1", "execution_id": "ex-1", "host": "api.partner.test",
        "attempts": 1, "breaker": "closed", "cost": 0.0, "budget_remaining": {"execution_calls": 2.0},
        "secrets": ["partner_token"],  # every use of a vault secret is audited by name, never by value
    }
    assert TOKEN not in str(record)
    metrics = gw.services.metrics.render().decode()
    assert 'portcullis_egress_calls_total{route="partner",status="2xx"} 1.0' in metrics


async def test_the_door_needs_credentials_and_an_execution_context(
    make_gateway: GatewayFactory, provider: tuple[int, list[dict[str, Any]]]
) -> None:
    port, seen = provider
    gw = await door(make_gateway, port)
    key = await gw.key("agent-7")
    assert (await gw.client.get("/egress/partner/v1/x", headers=CONTEXT)).status_code == 401
    missing = await gw.client.get("/egress/partner/v1/x", headers={"X-API-Key": key})
    assert missing.status_code == 400 and missing.json()["code"] == "request.malformed"
    bad = await gw.client.get("/egress/partner/v1/x", headers={"X-API-Key": key, "X-Workflow-Id": "wf 1",
                                                               "X-Execution-Id": "ex-1"})
    assert bad.status_code == 400
    assert seen == []


async def test_unknown_routes_budgets_and_ssrf_are_refused_as_problem_documents(
    make_gateway: GatewayFactory, provider: tuple[int, list[dict[str, Any]]]
) -> None:
    port, seen = provider
    gw = await door(make_gateway, port, budgets="{execution_calls: 1}")
    key = await gw.key("agent-7")
    headers = {"X-API-Key": key, **CONTEXT}
    unknown = await gw.client.get("/egress/nope/v1/x", headers=headers)
    assert unknown.status_code == 403 and unknown.json()["code"] == "egress.destination_denied"
    assert (await gw.client.get("/egress/partner/v1/x", headers=headers)).status_code == 200
    spent = await gw.client.get("/egress/partner/v1/x", headers=headers)
    assert spent.status_code == 429 and spent.json()["code"] == "budget.exhausted"
    assert "execution_calls" in spent.json()["detail"]
    assert len(seen) == 1
    assert PEPPER not in spent.text
    metrics = gw.services.metrics.render().decode()
    assert 'portcullis_egress_refusals_total{kind="budget",route="partner"} 1.0' in metrics
    assert 'portcullis_egress_refusals_total{kind="unknown_route",route=""} 1.0' in metrics


async def test_a_spent_windowed_budget_says_when_it_admits_again(
    make_gateway: GatewayFactory, provider: tuple[int, list[dict[str, Any]]]
) -> None:
    port, _ = provider
    clock = ManualClock()
    gw = await door(make_gateway, port, clock=clock, budgets="{workflow_calls_per_hour: 1}")
    headers = {"X-API-Key": await gw.key("agent-7"), **CONTEXT}
    assert (await gw.client.get("/egress/partner/v1/x", headers=headers)).status_code == 200
    clock.advance(600.5)
    spent = await gw.client.get("/egress/partner/v1/x", headers=headers)
    assert (spent.status_code, spent.json()["detail"]) == (429, "Exhausted: workflow_calls_per_hour.")
    assert spent.headers["retry-after"] == "3000"  # the hour's window resets 2,999.5 s later, rounded up
    clock.advance(3000)
    assert (await gw.client.get("/egress/partner/v1/x", headers=headers)).status_code == 200


async def test_operators_force_and_reset_breakers_from_the_cli_through_the_admin_api(
    make_gateway: GatewayFactory, provider: tuple[int, list[dict[str, Any]]]
) -> None:
    import asyncio

    from typer.testing import CliRunner

    from portcullis.cli.main import app as cli

    port, seen = provider
    gw = await door(make_gateway, port)
    key = await gw.key("agent-7")
    async with gw.admin_listener() as admin:
        runner = CliRunner()

        token = await gw.admin_token("admin")

        def run(*args: str) -> Any:
            return runner.invoke(cli, ["egress", *args, "--admin", admin],
                                 env={"COLUMNS": "200", "PORTCULLIS_ADMIN_TOKEN": token})

        forced = await asyncio.to_thread(run, "breaker", "partner", "open")
        assert forced.exit_code == 0 and "partner: forced_open" in forced.output
        refused = await gw.client.get("/egress/partner/v1/x", headers={"X-API-Key": key, **CONTEXT})
        assert refused.status_code == 503 and "retry-after" in refused.headers
        listed = await asyncio.to_thread(run, "breakers")
        assert "forced_open" in listed.output
        reset = await asyncio.to_thread(run, "breaker", "partner", "reset")
        assert "partner: closed" in reset.output
        assert (await gw.client.get("/egress/partner/v1/x", headers={"X-API-Key": key, **CONTEXT})).status_code == 200
        unknown = await asyncio.to_thread(run, "breaker", "nope", "open")
        assert unknown.exit_code == 1
        left = await asyncio.to_thread(run, "budgets", "--route", "partner", "--workflow", "wf-1",
                                       "--execution", "ex-1", "--user", "agent-7")
        assert left.exit_code == 0 and "execution_calls" in left.output and " 2 " in left.output  # 3 - 1 call
        fresh = await asyncio.to_thread(run, "budgets", "--route", "partner", "--workflow", "wf-1",
                                        "--execution", "ex-2", "--user", "agent-7")
        assert " 3 " in fresh.output
        assert len(seen) == 1
        metrics = gw.services.metrics.render().decode()
        assert 'portcullis_egress_breaker_transitions_total{route="partner",state="forced_open"} 1.0' in metrics
        assert 'portcullis_egress_refusals_total{kind="circuit_open",route="partner"} 1.0' in metrics
        assert 'portcullis_egress_breaker_open{route="partner"} 0.0' in metrics  # reset: closed again
        assert 'portcullis_egress_duration_seconds_count{route="partner"} 1.0' in metrics
        moves = [(r["decision"], r["egress"]) for r in await gw.audit_records() if r["decision"].startswith("breaker:")]
        assert moves == [
            ("breaker:forced_open", {"route": "partner", "breaker_from": "closed", "breaker": "forced_open"}),
            ("breaker:closed", {"route": "partner", "breaker_from": "forced_open", "breaker": "closed"}),
        ]


async def test_an_operator_resets_an_executions_budget_and_the_next_call_goes_through(
    make_gateway: GatewayFactory, provider: tuple[int, list[dict[str, Any]]]
) -> None:
    port, _ = provider
    gw = await door(make_gateway, port)
    key = await gw.key("agent-7")
    headers = {"X-API-Key": key, **CONTEXT}
    statuses = [(await gw.client.get("/egress/partner/v1/x", headers=headers)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    async with await gw.admin("admin") as admin:
        wrong = await admin.post("/egress/budgets/reset", json={"execution_id": "ex-1"})  # which workflow?
        reset = await admin.post("/egress/budgets/reset", json={"workflow_id": "wf-1", "execution_id": "ex-1"})
    assert wrong.status_code == 400
    assert reset.status_code == 200 and reset.json() == {"counters_reset": 2}
    assert (await gw.client.get("/egress/partner/v1/x", headers=headers)).status_code == 200
    security = [r for r in await gw.audit_records() if r["class"] == "security" and r["event"]["outcome"] == "ok"]
    [event] = [r for r in security if r["event"]["action"] == "budget.reset"]
    assert event["event"]["execution_id"] == "ex-1"
    # the four calls of one execution that injected the vault credential: one security event
    assert [r["event"]["action"] for r in security].count("secret.read") == 1


async def test_metrics_show_each_budget_limit_how_full_it_is_and_the_fullest_workflows(
    make_gateway: GatewayFactory, provider: tuple[int, list[dict[str, Any]]]
) -> None:
    port, _ = provider
    gw = await door(make_gateway, port, budgets="{execution_calls: 10, workflow_calls_per_day: 5, top_burners: 1}")
    key = await gw.key("agent-7")
    for workflow, calls in (("wf-busy", 4), ("wf-quiet", 1)):
        for n in range(calls):
            r = await gw.client.get("/egress/partner/v1/x", headers={
                "X-API-Key": key, "X-Workflow-Id": workflow, "X-Execution-Id": f"ex-{n}"})
            assert r.status_code == 200
    metrics = gw.services.metrics.render().decode()
    assert 'portcullis_egress_budget_limit{budget="workflow_calls_per_day",route="partner"} 5.0' in metrics
    assert 'portcullis_egress_budget_used_ratio{budget="workflow_calls_per_day",route="partner"} 0.8' in metrics
    assert 'portcullis_egress_budget_used_ratio{budget="execution_calls",route="partner"} 0.1' in metrics
    top = [line for line in metrics.splitlines() if line.startswith("portcullis_egress_budget_top_used_ratio{")]
    assert top == ['portcullis_egress_budget_top_used_ratio{budget="workflow_calls_per_day",subject="wf-busy",'
                   'subject_kind="workflow"} 0.8']


async def test_a_route_whose_secret_is_gone_refuses_the_call_without_sending_it(
    make_gateway: GatewayFactory, provider: tuple[int, list[dict[str, Any]]]
) -> None:
    # An operator deleted (or never set) the secret a route injects: the call cannot carry its
    # credential, so it is not sent at all; the caller gets a plain 503, the audit names the secret.
    port, seen = provider
    gw = await door(make_gateway, port)
    await gw.services.vault.delete("partner_token")
    answer = await gw.client.get("/egress/partner/v1/x", headers={"X-API-Key": await gw.key("agent-7"), **CONTEXT})
    assert (answer.status_code, answer.json()["code"]) == (503, "service.unavailable")
    assert "retry-after" not in answer.headers  # an operator must act; retrying soon changes nothing
    assert "partner_token" not in answer.text and "Traceback" not in answer.text
    assert seen == []
    [record] = [r for r in await gw.audit_records() if r["route"] == "egress"]
    assert record["decision"] == "egress_refused:credential_missing:partner_token"
