"""The endpoint bulkhead inside the egress pipeline: a queued call that times out, or whose caller
gives up, spends no budget and frees its place. A real provider on 127.0.0.1 that answers only
when the test lets it; queue timeouts driven by a manual timer (no waiting).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from ipaddress import ip_address
from pathlib import Path

import pytest
from aiohttp import web

from portcullis.config.egress import EgressConfig
from portcullis.egress.budgets import CallContext
from portcullis.egress.executor import EgressExecutor, EgressOutcome, EgressRequest
from portcullis.egress.resolver import StaticResolver
from portcullis.observability.metrics import GatewayMetrics
from portcullis.stores.sqlite import SqliteStore
from portcullis.testing import ManualClock, ManualTimer, catch_all, serve_app, until
from portcullis.vault import MasterKeys, Vault, generate_master_key


class Provider:
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.arrived = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.arrived += 1
        await self.gate.wait()
        return web.json_response({"ok": True})


@pytest.fixture
async def provider() -> AsyncIterator[tuple[Provider, int]]:
    p = Provider()
    async with serve_app(catch_all(p.handle)) as port:
        try:
            yield p, port
        finally:
            p.gate.set()


class World:
    def __init__(self, executor: EgressExecutor, timer: ManualTimer, metrics: GatewayMetrics) -> None:
        self.executor = executor
        self.timer = timer
        self.metrics = metrics

    def call(self, execution: str) -> asyncio.Task[EgressOutcome]:
        ctx = CallContext(execution, "wf-1", "alice")
        return asyncio.create_task(self.executor.run(EgressRequest("slow", "GET", "/x", ctx, request_id="r")))

    def depth(self) -> float:
        """Calls waiting, as ``/metrics`` shows them."""
        line = 'portcullis_egress_queue_depth{priority="normal",route="slow"} '
        rows = [r for r in self.metrics.render().decode().splitlines() if r.startswith(line)]
        return float(rows[0].removeprefix(line)) if rows else 0.0


@pytest.fixture
async def world(tmp_path: Path, provider: tuple[Provider, int]) -> AsyncIterator[World]:
    _, port = provider
    config = EgressConfig.model_validate({
        "budgets": {"execution_calls": None, "workflow_calls_per_day": 10},
        "routes": [{"name": "slow", "url": f"http://api.partner.test:{port}", "allow_http": True,
                    "allow_networks": ["127.0.0.0/8"],
                    "bulkhead": {"max_concurrent": 1, "max_queue": 1, "queue_timeout": "5s"}}],
    })
    store = await SqliteStore.connect(str(tmp_path / "v.db"))
    clock = ManualClock()
    timer = ManualTimer(clock)
    metrics = GatewayMetrics()
    executor = EgressExecutor(config, vault=Vault(store, MasterKeys([generate_master_key().encode()]), clock),
                              resolver=StaticResolver({"api.partner.test": [[ip_address("127.0.0.1")]]}),
                              clock=clock, timer=timer, metrics=metrics)
    try:
        yield World(executor, timer, metrics)
    finally:
        await executor.aclose()
        await store.aclose()


async def test_a_call_that_waits_past_the_queue_timeout_is_shed_and_spends_no_budget(
    world: World, provider: tuple[Provider, int],
) -> None:
    p, _ = provider
    holder = world.call("ex-1")
    await until(lambda: p.arrived == 1)
    waiter = world.call("ex-2")
    await until(lambda: world.depth() == 1)
    world.timer.advance(5)
    shed = await waiter
    assert shed.status == 503 and shed.problem is not None and shed.problem.value == "egress.shed"
    assert shed.decision == "egress_refused:shed:queue_timeout"
    assert (b"retry-after", b"1") in shed.headers
    p.gate.set()
    answered = await holder
    assert answered.status == 200 and (b"x-budget-remaining", b"workflow_calls_per_day=9") in answered.headers
    after = await world.call("ex-3")
    assert (b"x-budget-remaining", b"workflow_calls_per_day=8") in after.headers  # the shed call spent nothing
    assert p.arrived == 2


async def test_a_caller_that_gives_up_while_queued_frees_its_place(world: World, provider: tuple[Provider, int]) -> None:
    p, _ = provider
    holder = world.call("ex-1")
    await until(lambda: p.arrived == 1)
    impatient = world.call("ex-2")
    await until(lambda: world.depth() == 1)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    assert world.depth() == 0
    patient = world.call("ex-3")  # the queue's one place is free again: queued, not shed
    await until(lambda: world.depth() == 1)
    p.gate.set()
    assert (await holder).status == 200 and (await patient).status == 200
    assert p.arrived == 2
