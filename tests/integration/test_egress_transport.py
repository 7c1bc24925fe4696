"""The in-process door: ``httpx.AsyncClient(transport=AsyncTransport(...))``, as an SDK would use it.

The provider is a real server on 127.0.0.1 behind a fixed resolver and an explicit 127.0.0.0/8
exception (see test_egress_executor.py). The client code never holds the provider's key.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from portcullis.audit.jsonl import JsonlFileSink
from portcullis.audit.writer import AuditWriter
from portcullis.config.egress import EgressConfig
from portcullis.egress.budgets import CallContext
from portcullis.egress.executor import EgressExecutor
from portcullis.egress.resolver import StaticResolver
from portcullis.egress.transport import AsyncTransport
from portcullis.stores.sqlite import SqliteStore
from portcullis.testing import ManualClock
from portcullis.vault import MasterKeys, Vault, generate_master_key

KEY = "sk-" + "llmprovider" * 4


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def completions(request: web.Request) -> web.Response:
        seen.append({"path": request.path_qs, "auth": request.headers.get("Authorization"),
                     "body": await request.json()})
        return web.json_response({"id": "cmpl-1", "choices": [{"text": "hello"}]})

    async def notes(_: web.Request) -> web.Response:
        return web.Response(headers={"X-Provider": "caf\xe9 \u2615"}, body=b"{}")  # aiohttp sends UTF-8

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_post("/v1/notes", notes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    config = EgressConfig.model_validate({
        "budgets": {"execution_calls": 2},
        "routes": [{"name": "llm", "url": f"http://llm.test:{port}/v1", "allow_http": True,
                    "allow_networks": ["127.0.0.0/8"], "methods": ["POST"],
                    "headers": {"Authorization": "Bearer {secret:llm_key}"}}],
    })
    store = await SqliteStore.connect(str(tmp_path / "v.db"))
    vault = Vault(store, MasterKeys([generate_master_key().encode()]), ManualClock())
    await vault.set("llm_key", KEY)
    executor = EgressExecutor(config, vault=vault, resolver=StaticResolver({"llm.test": [[ip_address("127.0.0.1")]]}),
                              clock=ManualClock())
    audit = AuditWriter([JsonlFileSink(tmp_path / "audit.jsonl", max_bytes=1 << 20, backup_count=1)],
                        spill_path=tmp_path / "spill.jsonl", clock=ManualClock())
    await audit.start()
    transport = AsyncTransport(executor, config, CallContext("ex-7", "wf-agent", "alice"), audit=audit)
    http = httpx.AsyncClient(transport=transport, base_url=f"http://llm.test:{port}/v1")
    async def trail() -> str:
        await audit.flush()
        return await asyncio.to_thread((tmp_path / "audit.jsonl").read_text)

    http.trail = trail  # type: ignore[attr-defined]
    try:
        yield http, seen
    finally:
        await audit.aclose()
        await http.aclose()
        await executor.aclose()
        await store.aclose()
        await runner.cleanup()


async def test_an_sdk_style_call_goes_through_with_the_vault_key(
    client: tuple[httpx.AsyncClient, list[dict[str, Any]]]
) -> None:
    http, seen = client
    r = await http.post("/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                        headers={"Authorization": "Bearer not-the-real-key"})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == "hello"
    assert seen == [{"path": "/v1/chat/completions", "auth": f"Bearer {KEY}",
                     "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}]
    assert r.headers["x-egress-attempts"] == "1"
    assert "execution_calls=1" in r.headers.get_list("x-budget-remaining")
    assert KEY not in r.text
    text = await http.trail()  # type: ignore[attr-defined]
    [record] = [json.loads(line) for line in text.splitlines()]
    assert (record["route"], record["consumer_id"], record["status"], record["decision"]) == (
        "egress", "alice", 200, "allowed")
    assert record["egress"]["execution_id"] == "ex-7" and record["egress"]["secrets"] == ["llm_key"]
    assert KEY not in text  # the credential never reaches the audit trail


async def test_answer_header_bytes_beyond_ascii_reach_the_sdk_unchanged(
    client: tuple[httpx.AsyncClient, list[dict[str, Any]]]
) -> None:
    http, _ = client
    r = await http.post("/notes", content=b"{}")
    assert r.status_code == 200
    assert (b"x-provider", "caf\xe9 \u2615".encode()) in r.headers.raw


async def test_refusals_are_problem_documents_the_sdk_can_read(
    client: tuple[httpx.AsyncClient, list[dict[str, Any]]]
) -> None:
    http, seen = client
    denied = await http.get("/chat/completions")  # the route allows POST only
    assert denied.status_code == 403 and denied.json()["code"] == "egress.destination_denied"
    elsewhere = await http.post("http://169.254.169.254/latest/meta-data/", json={})
    assert elsewhere.status_code == 403  # no route covers it: refused without a lookup
    await http.post("/chat/completions", json={})
    await http.post("/chat/completions", json={})
    spent = await http.post("/chat/completions", json={})
    assert spent.status_code == 429
    assert spent.json()["code"] == "budget.exhausted" and "execution_calls" in spent.json()["detail"]
    assert len(seen) == 2
    decisions = [json.loads(line)["decision"] for line in (await http.trail()).splitlines()]  # type: ignore[attr-defined]
    assert decisions[0] == "egress_refused:method_not_allowed" and decisions[-1].startswith("egress_refused:budget")


async def test_the_sync_transport_serves_a_plain_httpx_client(tmp_path: Path) -> None:
    import asyncio

    from portcullis.egress.transport import Transport

    seen: list[str | None] = []

    async def hello(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"sync": True})

    app = web.Application()
    app.router.add_get("/v1/hello", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    config = EgressConfig.model_validate({"routes": [{
        "name": "llm", "url": f"http://llm.test:{port}/v1", "allow_http": True, "allow_networks": ["127.0.0.0/8"],
        "headers": {"Authorization": "Bearer {secret:llm_key}"}}]})
    store = await SqliteStore.connect(str(tmp_path / "v.db"))
    vault = Vault(store, MasterKeys([generate_master_key().encode()]), ManualClock())
    await vault.set("llm_key", KEY)
    resolver = StaticResolver({"llm.test": [[ip_address("127.0.0.1")]]})

    def use_it() -> tuple[int, Any]:
        transport = Transport(lambda: EgressExecutor(config, vault=vault, resolver=resolver, clock=ManualClock()),
                              config, CallContext("ex-s", "wf-sync", "bob"))
        with httpx.Client(transport=transport) as http:
            r = http.get(f"http://llm.test:{port}/v1/hello")
            return r.status_code, r.json()

    try:
        assert await asyncio.to_thread(use_it) == (200, {"sync": True})
        assert seen == [f"Bearer {KEY}"]
    finally:
        await store.aclose()
        await runner.cleanup()
