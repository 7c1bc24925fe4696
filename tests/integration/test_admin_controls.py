"""Incident controls through the admin API and the CLI: who may act, what an act does at once, what
it leaves in the trail, and the problem documents for what cannot be enforced.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.conftest import Gateway, GatewayFactory, UpstreamServer, gateway_yaml
from typer.testing import CliRunner

from portcullis.cli.main import app as cli

ROUTES = """
routes:
  - name: orders
    path: "/orders/{rest:path}"
    upstream: api
    auth: {api_key: {}}
    rate_limits: [{name: per-consumer, key: consumer, rates: ["10/minute"]}]
  - {name: open, path: "/open", upstream: api, auth: none}
"""


async def security_events(gw: Gateway, action: str) -> list[dict[str, Any]]:
    return [r for r in await gw.audit_records() if r.get("class") == "security"
            and (r.get("event") or {}).get("action") == action]


async def test_a_block_made_over_the_admin_api_refuses_at_once_and_lifting_it_restores_access(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    async with await gw.admin("security") as admin:
        made = await admin.post("/blocks", json={"kind": "address", "subject": "127.0.0.0/8", "reason": "flood",
                                                 "expires_in_s": 3600})
        assert made.status_code == 201
        body = made.json()
        assert (body["kind"], body["subject"], body["reason"]) == ("address", "127.0.0.0/8", "flood")
        assert body["expires_at"] == pytest.approx(gw.clock.wall() + 3600)
        assert body["created_by"].startswith("token:")
        assert (await gw.client.get("/open")).status_code == 403
        listed = (await admin.get("/blocks")).json()
        assert [b["id"] for b in listed] == [body["id"]]
        lifted = await admin.delete(f"/blocks/{body['id']}")
        assert lifted.json() == {"id": body["id"], "status": "lifted"}
        assert (await gw.client.get("/open")).status_code == 200
        assert (await admin.get("/blocks")).json() == []
        assert [b["lifted_by"] for b in (await admin.get("/blocks", params={"all": "true"})).json()] == [
            body["created_by"]]
        assert (await admin.delete(f"/blocks/{body['id']}")).status_code == 404
    [created] = await security_events(gw, "block.create")
    assert created["event"]["outcome"] == "ok" and created["event"]["block_id"] == body["id"]
    assert [e["event"]["outcome"] for e in await security_events(gw, "block.lift")] == ["ok", "refused"]


@pytest.mark.parametrize(("role", "method", "path", "payload"), [
    ("admin", "POST", "/blocks", {"kind": "user", "subject": "u1", "reason": "r"}),
    ("admin", "POST", "/emergency-limits", {"scope": "gateway", "factor": 0.5, "duration_s": 60, "reason": "r"}),
    ("developer", "GET", "/blocks", None),
    ("compliance", "DELETE", "/blocks/blk_1", None),
], ids=["admin-cannot-block", "admin-cannot-cut-limits", "developer-cannot-read", "compliance-cannot-lift"])
async def test_only_the_security_role_runs_incident_controls(
    make_gateway: GatewayFactory, upstream: UpstreamServer, role: str, method: str, path: str,
    payload: dict[str, Any] | None,
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    async with await gw.admin(role) as admin:
        answer = await admin.request(method, path, json=payload)
    assert (answer.status_code, answer.json()["code"]) == (403, "authz.forbidden")
    assert await gw.services.controls.list_blocks(include_inactive=True) == []


@pytest.mark.parametrize(("path", "payload", "status", "detail"), [
    # refused by the schema: 400 request.malformed
    ("/blocks", {"kind": "address", "subject": "10.0.0.1", "reason": "line\nbreak"}, 400, "reason"),
    ("/blocks", {"kind": "planet", "subject": "x", "reason": "r"}, 400, "kind"),
    ("/blocks", {"kind": "user", "subject": "u", "reason": "r", "note": "extra"}, 400, "note"),
    ("/blocks", {"kind": "user", "subject": "u", "reason": "r", "expires_in_s": 0}, 400, "expires_in_s"),
    ("/emergency-limits", {"scope": "gateway", "factor": 0, "duration_s": 60, "reason": "r"}, 400, "factor"),
    # accepted by the schema, but not enforceable as asked: 409 admin.conflict
    ("/blocks", {"kind": "address", "subject": "10.0.0.300", "reason": "r"}, 409, "subject"),
    ("/emergency-limits", {"scope": "route", "subject": "", "factor": 0.5, "duration_s": 60, "reason": "r"}, 409,
     "subject"),
], ids=["newline-in-reason", "unknown-kind", "unknown-field", "zero-lifetime", "zero-factor", "bad-address",
        "route-without-a-name"])
async def test_a_control_that_cannot_be_enforced_is_refused_with_a_detail_that_names_the_field(
    make_gateway: GatewayFactory, upstream: UpstreamServer, path: str, payload: dict[str, Any], status: int,
    detail: str,
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    async with await gw.admin("security") as admin:
        answer = await admin.post(path, json=payload)
    code = "request.malformed" if status == 400 else "admin.conflict"
    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert detail in answer.json()["detail"]
    assert await gw.services.controls.list_blocks(include_inactive=True) == []
    assert await gw.services.controls.list_emergencies(include_inactive=True) == []


async def test_an_emergency_limit_over_the_admin_api_scales_limits_and_restores_by_default_over_ten_minutes(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    key = {"X-API-Key": await gw.key("alice")}
    async with await gw.admin("security") as admin:
        made = await admin.post("/emergency-limits", json={"scope": "consumer", "subject": "alice", "factor": 0.3,
                                                           "duration_s": 60, "reason": "suspected DDoS"})
        assert made.status_code == 201
        body = made.json()
        assert (body["factor"], body["factor_now"], body["restore_s"]) == (0.3, 0.3, 600.0)
        answer = await gw.client.get("/orders/1", headers=key)
        assert answer.headers["ratelimit-policy"] == '"per-consumer";q=3;w=60'
        gw.clock.advance(360.0)  # half-way through the ramp
        [shown] = (await admin.get("/emergency-limits")).json()
        assert shown["factor_now"] == pytest.approx(0.65)
        assert (await admin.delete(f"/emergency-limits/{body['id']}")).status_code == 200
        answer = await gw.client.get("/orders/1", headers=key)
        assert answer.headers["ratelimit-policy"] == '"per-consumer";q=10;w=60'
        assert (await admin.delete(f"/emergency-limits/{body['id']}")).status_code == 404
    [created] = await security_events(gw, "emergency.create")
    assert (created["event"]["emergency_id"], created["event"]["factor"]) == (body["id"], 0.3)


@pytest.fixture
async def admin_url(make_gateway: GatewayFactory, upstream: UpstreamServer) -> AsyncIterator[tuple[Gateway, str]]:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    async with gw.admin_listener() as url:
        yield gw, url


async def test_operators_block_and_cut_limits_from_the_cli(admin_url: tuple[Gateway, str]) -> None:
    gw, admin = admin_url
    token = await gw.admin_token("security")

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, [*args, "--admin", admin], env={"COLUMNS": "200",
                                                                       "PORTCULLIS_ADMIN_TOKEN": token})

    made = await asyncio.to_thread(run, "blocks", "add", "workflow", "wf-loop", "--reason", "runaway", "--expires",
                                   "1h", "--json")
    assert made.exit_code == 0, made.output
    block_id = json.loads(made.output)["id"]
    listed = await asyncio.to_thread(run, "blocks", "list")
    assert block_id in listed.output and "wf-loop" in listed.output
    cut = await asyncio.to_thread(run, "emergency", "set", "gateway", "0.1", "--for", "15m", "--restore", "5m",
                                  "--reason", "suspected DDoS")
    assert cut.exit_code == 0 and "at 0.1" in cut.output, cut.output
    shown = await asyncio.to_thread(run, "emergency", "list")
    assert "gateway" in shown.output and "300" in shown.output
    assert gw.services.controls.snapshot.factor("orders", None, gw.clock.wall()) == pytest.approx(0.1)
    assert (await asyncio.to_thread(run, "blocks", "lift", block_id)).exit_code == 0
    again = await asyncio.to_thread(run, "blocks", "lift", block_id)
    assert again.exit_code == 1 and "admin.not_found" in again.output
    bad = await asyncio.to_thread(run, "blocks", "add", "planet", "x", "--reason", "r")
    assert bad.exit_code == 2
    denied = await asyncio.to_thread(CliRunner().invoke, cli, ["blocks", "list", "--admin", admin],
                                     env={"PORTCULLIS_ADMIN_TOKEN": "nope"})
    assert denied.exit_code == 3
