"""Incident controls on a real gateway: each block kind refused at its phase, emergency limits on the
live limiter, and the records an auditor reads afterwards. Time is the gateway's manual clock.

Where each kind is enforced: addresses in the shield (before authentication or any store lookup),
consumers and keys right after authentication, workflows, users and executions at the egress
executor, which both egress doors (the gateway's ``/egress`` route and the in-process httpx
transport) go through.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from tests.conftest import PEPPER, GatewayFactory, UpstreamServer, gateway_yaml

from portcullis.audit.jsonl import JsonlFileSink
from portcullis.audit.writer import AuditWriter
from portcullis.config.egress import EgressConfig
from portcullis.controls import BlockKind, EmergencyScope, IncidentControls
from portcullis.egress.budgets import CallContext
from portcullis.egress.executor import EgressExecutor
from portcullis.egress.resolver import StaticResolver
from portcullis.egress.transport import AsyncTransport
from portcullis.identity.api_keys import issue_key
from portcullis.stores.memory_controls import MemoryControlStore
from portcullis.stores.sqlite import SqliteStore
from portcullis.testing import ManualClock, catch_all, serve_app
from portcullis.vault import MasterKeys, Vault, generate_master_key

ROUTES = """
trusted_proxies: [127.0.0.1/32]
routes:
  - name: orders
    path: "/orders/{rest:path}"
    upstream: api
    auth: {api_key: {}}
    rate_limits: [{name: per-consumer, key: consumer, rates: ["10/minute"]}]
  - {name: open, path: "/open", upstream: api, auth: none}
"""
MASTER = generate_master_key()
TOKEN = "sk-" + "Pr0v1d3r" * 4


def blocked_document(answer: httpx.Response) -> None:
    assert answer.status_code == 403
    body = answer.json()
    request_id = body.pop("request_id")
    assert body == {"type": "https://portcullis.dev/errors/access.blocked", "title": "Access blocked.",
                    "status": 403, "code": "access.blocked"}
    assert request_id == answer.headers.get("x-request-id", request_id)  # the transport sends no headers


async def decisions(gw: Any) -> list[str]:
    return [r["decision"] for r in await gw.audit_records() if r.get("class") == "request"]


async def test_a_blocked_address_is_refused_in_the_shield_before_any_key_lookup(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    block = await gw.services.controls.add_block(BlockKind.ADDRESS, "203.0.113.0/24", reason="stuffing from here",
                                                 actor="test")
    unknown = issue_key("ghost", (), pepper=PEPPER.encode(), clock=gw.clock).key  # well formed, never stored
    await gw.services.store.aclose()  # any key lookup now fails: 503, never 403
    blocked = await gw.client.get("/orders/1", headers={"X-API-Key": unknown, "X-Forwarded-For": "203.0.113.5"})
    blocked_document(blocked)
    assert "stuffing" not in blocked.text
    looked_up = await gw.client.get("/orders/1", headers={"X-API-Key": unknown, "X-Forwarded-For": "198.51.100.7"})
    assert looked_up.status_code == 503  # the same request from elsewhere did reach the key store
    assert upstream.seen == []
    assert (await decisions(gw))[0] == f"blocked:{block.block_id}"


async def test_a_blocked_address_is_refused_on_public_routes_and_others_pass(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    await gw.services.controls.add_block(BlockKind.ADDRESS, "2001:db8::/32", reason="flood", actor="test")
    blocked_document(await gw.client.get("/open", headers={"X-Forwarded-For": "2001:db8::77"}))
    assert (await gw.client.get("/open", headers={"X-Forwarded-For": "2001:db9::77"})).status_code == 200
    assert len(upstream.seen) == 1


async def test_a_blocked_consumer_is_refused_right_after_authentication(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    mallory, alice = await gw.key("mallory"), await gw.key("alice")
    block = await gw.services.controls.add_block(BlockKind.CONSUMER, "mallory", reason="scraping", actor="test")
    refused = await gw.client.get("/orders/1", headers={"X-API-Key": mallory})
    blocked_document(refused)
    assert "ratelimit" not in refused.headers  # refused before the limit stage spent anything
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": alice})).status_code == 200
    assert [s.raw_path for s in upstream.seen] == ["/orders/1"]
    records = [r for r in await gw.audit_records() if r.get("class") == "request"]
    assert [(r["consumer_id"], r["decision"]) for r in records] == [
        ("mallory", f"blocked:{block.block_id}"), ("alice", "allowed")]


async def test_a_blocked_key_is_refused_while_the_consumers_other_key_passes(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    issued = issue_key("alice", (), pepper=PEPPER.encode(), clock=gw.clock)
    await gw.services.store.create(issued.record)
    other = await gw.key("alice")
    await gw.services.controls.add_block(BlockKind.KEY, issued.record.key_id, reason="leaked", actor="test")
    blocked_document(await gw.client.get("/orders/1", headers={"X-API-Key": issued.key}))
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": other})).status_code == 200


async def test_an_expired_block_no_longer_applies(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    key = await gw.key("mallory")
    await gw.services.controls.add_block(BlockKind.CONSUMER, "mallory", reason="cool off", actor="test",
                                         expires_in_s=300.0)
    blocked_document(await gw.client.get("/orders/1", headers={"X-API-Key": key}))
    gw.clock.advance(300.0)
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": key})).status_code == 200


async def test_lifting_a_block_restores_access_at_once(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    block = await gw.services.controls.add_block(BlockKind.ADDRESS, "127.0.0.1", reason="r", actor="test")
    blocked_document(await gw.client.get("/open"))
    assert await gw.services.controls.lift_block(block.block_id, actor="test") is True
    assert (await gw.client.get("/open")).status_code == 200


async def test_an_emergency_limit_scales_the_routes_limits_and_restores_them_gradually(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    key = {"X-API-Key": await gw.key("alice")}
    await gw.services.controls.add_emergency(EmergencyScope.ROUTE, "orders", 0.2, duration_s=60.0, restore_s=120.0,
                                             reason="suspected DDoS", actor="test")

    async def admitted(n: int) -> list[int]:
        return [(await gw.client.get("/orders/x", headers=key)).status_code for _ in range(n)]

    first = await gw.client.get("/orders/x", headers=key)
    assert first.headers["ratelimit-policy"] == '"per-consumer";q=2;w=60'  # 10/minute at 0.2
    assert await admitted(3) == [200, 429, 429]
    gw.clock.advance(120.0)  # half-way through the restore: 0.6 of the limits, and a minute has refilled
    assert (await admitted(8)).count(200) == 6
    gw.clock.advance(60.0)  # restored
    ok = await gw.client.get("/orders/x", headers=key)
    assert ok.headers["ratelimit-policy"] == '"per-consumer";q=10;w=60'


@pytest.fixture
async def provider() -> AsyncIterator[tuple[int, list[str]]]:
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"ok": True})

    async with serve_app(catch_all(handle)) as port:
        yield port, seen


def egress_yaml(port: int) -> str:
    return gateway_yaml("http://127.0.0.1:9", f"""
routes:
  - {{name: health, path: /health, upstream: api, auth: none}}
egress:
  budgets: {{execution_calls: 0}}
  routes:
    - name: partner
      url: "http://api.partner.test:{port}"
      allow_http: true
      allow_networks: [127.0.0.0/8]
      headers: {{Authorization: "Bearer {{secret:partner_token}}", X-Also: "{{secret:partner_token}}"}}
""")


@pytest.mark.parametrize(("kind", "subject"), [
    (BlockKind.WORKFLOW, "wf-loop"), (BlockKind.USER, "agent-7"), (BlockKind.EXECUTION, "run-1"),
], ids=["workflow", "user", "execution"])
async def test_the_egress_door_refuses_a_blocked_workflow_user_or_execution(
    make_gateway: GatewayFactory, provider: tuple[int, list[str]], kind: BlockKind, subject: str
) -> None:
    port, seen = provider
    gw = await make_gateway(egress_yaml(port), env={"PORTCULLIS_SECRET_KEY": MASTER},
                            resolver=StaticResolver({"api.partner.test": [[ip_address("127.0.0.1")]]}),
                            secrets={"partner_token": TOKEN})
    block = await gw.services.controls.add_block(kind, subject, reason="runaway", actor="test")
    agent, other = await gw.key("agent-7"), await gw.key("agent-8")
    context = {"X-Workflow-Id": "wf-loop", "X-Execution-Id": "run-1"}
    blocked_document(await gw.client.get("/egress/partner/v1/x", headers={"X-API-Key": agent, **context}))
    assert seen == []
    fine = {"X-API-Key": other, "X-Workflow-Id": "wf-ok", "X-Execution-Id": "run-2"}
    assert (await gw.client.get("/egress/partner/v1/x", headers=fine)).status_code == 200
    records = [r for r in await gw.audit_records() if r.get("route") == "egress"]
    assert [r["decision"] for r in records] == [f"blocked:{block.block_id}", "allowed"]


async def test_a_vault_secret_injected_by_egress_is_a_security_event_per_execution_and_minute_with_a_count(
    make_gateway: GatewayFactory, provider: tuple[int, list[str]]
) -> None:
    port, _ = provider
    clock = ManualClock()
    gw = await make_gateway(egress_yaml(port), env={"PORTCULLIS_SECRET_KEY": MASTER}, clock=clock,
                            resolver=StaticResolver({"api.partner.test": [[ip_address("127.0.0.1")]]}),
                            secrets={"partner_token": TOKEN})
    key = await gw.key("agent-7")
    headers = {"X-API-Key": key, "X-Workflow-Id": "wf-1", "X-Execution-Id": "ex-1"}
    first = await gw.client.get("/egress/partner/v1/x", headers=headers)
    for _ in range(3):  # the same execution within the minute: counted, no event of their own
        assert (await gw.client.get("/egress/partner/v1/x", headers=headers)).status_code == 200
    other = {**headers, "X-Execution-Id": "ex-2"}  # another execution: its own event at once
    assert (await gw.client.get("/egress/partner/v1/x", headers=other)).status_code == 200
    clock.advance(60.0)
    assert (await gw.client.get("/egress/partner/v1/x", headers=headers)).status_code == 200
    records = await gw.audit_records()
    events = [r for r in records if r.get("class") == "security"]
    assert first.status_code == 200
    assert events[0]["decision"] == "secret.read:ok" and events[0]["request_id"] == first.headers["x-request-id"]
    assert events[0]["event"] == {"action": "secret.read", "outcome": "ok", "actor": "egress:partner", "role": None,
                                  "target": "partner_token", "execution_id": "ex-1", "workflow_id": "wf-1",
                                  "user": "agent-7", "reads_since_last_event": 0}
    assert [(e["event"]["execution_id"], e["event"]["reads_since_last_event"]) for e in events] == [
        ("ex-1", 0), ("ex-2", 0), ("ex-1", 3)]
    # every call's own record names the secret it injected
    calls = [r for r in records if r.get("route") == "egress"]
    assert len(calls) == 6 and all(r["egress"]["secrets"] == ["partner_token"] for r in calls)
    assert TOKEN not in str(records)


@pytest.mark.parametrize(("kind", "subject"), [
    (BlockKind.WORKFLOW, "wf-agent"), (BlockKind.USER, "alice"), (BlockKind.EXECUTION, "ex-7"),
], ids=["workflow", "user", "execution"])
async def test_the_httpx_transport_refuses_a_blocked_workflow_user_or_execution(
    tmp_path: Path, provider: tuple[int, list[str]], kind: BlockKind, subject: str
) -> None:
    port, seen = provider
    clock = ManualClock()
    config = EgressConfig.model_validate({"routes": [{
        "name": "llm", "url": f"http://llm.test:{port}/v1", "allow_http": True, "allow_networks": ["127.0.0.0/8"]}]})
    store = await SqliteStore.connect(str(tmp_path / "v.db"))
    controls = IncidentControls(MemoryControlStore(), clock)
    block = await controls.add_block(kind, subject, reason="runaway", actor="test")
    executor = EgressExecutor(config, vault=Vault(store, MasterKeys([MASTER.encode()]), clock),
                              resolver=StaticResolver({"llm.test": [[ip_address("127.0.0.1")]]}), clock=clock,
                              controls=controls)
    audit = AuditWriter([JsonlFileSink(tmp_path / "audit.jsonl", max_bytes=1 << 20, backup_count=1)],
                        spill_path=tmp_path / "spill.jsonl", clock=clock)
    await audit.start()
    blocked_ctx, other_ctx = CallContext("ex-7", "wf-agent", "alice"), CallContext("ex-8", "wf-other", "bob")
    try:
        async with httpx.AsyncClient(transport=AsyncTransport(executor, config, blocked_ctx, audit=audit)) as http:
            blocked_document(await http.get(f"http://llm.test:{port}/v1/models"))
        async with httpx.AsyncClient(transport=AsyncTransport(executor, config, other_ctx, audit=audit)) as http:
            assert (await http.get(f"http://llm.test:{port}/v1/models")).status_code == 200
        await audit.flush()
        text = await asyncio.to_thread((tmp_path / "audit.jsonl").read_text)
        assert f'"decision":"blocked:{block.block_id}"' in text
        assert seen == ["/v1/models"]
    finally:
        await audit.aclose()
        await executor.aclose()
        await store.aclose()
