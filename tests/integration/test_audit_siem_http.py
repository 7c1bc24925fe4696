"""The HTTP SIEM sink against a real collector on 127.0.0.1, and both SIEM sinks configured on a real gateway.

The collector is an aiohttp app that records each POST; the writer tests run on a manual clock that
drives the lanes' backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from tests.audit_trail import record
from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml
from tests.ocsf_schema import ocsf_errors
from tests.siem_receivers import SyslogReceiver

from portcullis.audit.jsonl import JsonlFileSink
from portcullis.audit.siem_http import HttpSink
from portcullis.audit.writer import AuditWriter
from portcullis.config.loader import load_config_text
from portcullis.config.model import HttpSiemConfig
from portcullis.gateway.build import open_vault
from portcullis.stores.opening import open_store
from portcullis.testing import ManualClock, catch_all, serve_app
from portcullis.vault import generate_master_key

MASTER = generate_master_key()
SIEM_TOKEN = "siem-" + "T0k3nV4lu3" * 3


@dataclass
class Collector:
    port: int = 0
    posts: list[tuple[dict[str, str], list[dict[str, Any]]]] = field(default_factory=list)
    answer: int = 200
    hang: bool = False
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        if self.hang:
            await self.released.wait()  # a collector that does not answer (until the test lets it)
            return web.Response(status=503)
        body = await request.read()
        if self.answer == 200:
            self.posts.append((dict(request.headers), orjson.loads(body)))
            self.arrived.set()
        return web.Response(status=self.answer)

    @property
    def items(self) -> list[dict[str, Any]]:
        return [item for _, batch in self.posts for item in batch]

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        async with asyncio.timeout(10):
            while len(self.items) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.items


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    server = Collector()
    async with serve_app(catch_all(server.handle)) as port:
        server.port = port
        yield server


def http_config(port: int, **extra: Any) -> HttpSiemConfig:
    return HttpSiemConfig.model_validate({"type": "http", "name": "collector", "url": f"http://127.0.0.1:{port}/in",
                                          "allow_http": True, "timeout": "2s", **extra})


@contextlib.asynccontextmanager
async def writer_with(sinks: dict[str, Any], tmp_path: Path, clock: ManualClock) -> AsyncIterator[AuditWriter]:
    writer = AuditWriter(sinks, spill_path=tmp_path / "spill.jsonl", clock=clock, batch_size=16)
    await writer.start()
    try:
        yield writer
    finally:
        await writer.aclose()


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["http_request"]["uid"] for i in items if i["class_uid"] == 4002]


async def test_batches_arrive_as_json_arrays_of_ocsf_events_with_the_configured_headers(
    collector: Collector, tmp_path: Path
) -> None:
    clock = ManualClock()
    sink = HttpSink(http_config(collector.port), base_dir=tmp_path, headers={"authorization": "Bearer t"})
    async with writer_with({"siem": sink}, tmp_path, clock) as writer:
        for n in range(20):
            writer.submit(record(clock, n))
        await writer.flush()
        items = await collector.wait_for(40)
    assert ids(items) == [f"req-{n}" for n in range(20)]
    assert all(ocsf_errors(i) == [] for i in items)
    headers, _ = collector.posts[0]
    assert headers["Authorization"] == "Bearer t" and headers["Content-Type"] == "application/json"


async def test_a_refusing_collector_gets_the_records_in_order_once_it_takes_them_again(
    collector: Collector, tmp_path: Path
) -> None:
    clock = ManualClock()
    sink = HttpSink(http_config(collector.port, format="native"), base_dir=tmp_path, headers={})
    async with writer_with({"siem": sink}, tmp_path, clock) as writer:
        writer.submit(record(clock, 0))
        await writer.flush()
        await collector.wait_for(1)
        collector.answer = 503
        for n in range(1, 21):
            writer.submit(record(clock, n))
            if n % 5 == 0:
                await writer.flush()
        assert writer.stats.waiting == 20 and writer.stats.lost == 0
        collector.answer = 200
        clock.advance(31)
        await writer.flush()
        items = await collector.wait_for(21)
    assert [i["request_id"] for i in items] == [f"req-{n}" for n in range(21)]


async def test_a_collector_that_never_answers_times_out_and_holds_up_no_other_sink(
    collector: Collector, tmp_path: Path
) -> None:
    collector.hang = True
    clock = ManualClock()
    sink = HttpSink(http_config(collector.port, timeout="300ms"), base_dir=tmp_path, headers={})
    file_sink = JsonlFileSink(tmp_path / "audit.jsonl", max_bytes=0, backup_count=0)
    async with writer_with({"file": file_sink, "siem": sink}, tmp_path, clock) as writer:
        for n in range(10):
            writer.submit(record(clock, n))
        await writer.flush()
        assert writer.stats.failures == 1 and writer.stats.waiting == 10
        lines = await asyncio.to_thread((tmp_path / "audit.jsonl").read_bytes)
        assert lines.count(b"\n") == 10
        collector.hang = False
        collector.released.set()
        clock.advance(31)
        await writer.flush()
        assert ids(await collector.wait_for(20)) == [f"req-{n}" for n in range(10)]


@pytest.fixture
async def receiver() -> AsyncIterator[SyslogReceiver]:
    server = SyslogReceiver()
    await server.start()
    yield server
    await server.stop()


async def test_a_gateway_streams_its_records_to_both_configured_siems(
    make_gateway: GatewayFactory, upstream: UpstreamServer, collector: Collector, receiver: SyslogReceiver,
    tmp_path: Path,
) -> None:
    yaml_text = gateway_yaml(upstream.url, """
routes:
  - {name: orders, path: "/orders/{order_id}", upstream: api}
""").replace("flush_interval: 0.05s}", f"""flush_interval: 0.05s, siem: [
  {{type: syslog, name: soc, host: 127.0.0.1, port: {receiver.port}, allow_plaintext: true}},
  {{type: http, name: lake, url: "http://127.0.0.1:{collector.port}/in", allow_http: true,
    headers: {{authorization: "Bearer {{secret:siem_token}}"}}}}]}}""")
    env = {"PORTCULLIS_SECRET_KEY": MASTER}
    config = load_config_text(yaml_text, env=env)
    store = await open_store(config.store, base_dir=tmp_path)  # the token is in the vault before the gateway starts
    await (await open_vault(store, ManualClock(), env)).set("siem_token", SIEM_TOKEN)
    await store.aclose()
    gw = await make_gateway(yaml_text, env=env)
    key = {"X-API-Key": await gw.key("acme")}
    assert (await gw.client.get("/orders/7", headers=key)).status_code == 200
    assert (await gw.client.get("/orders/8")).status_code == 401
    await gw.services.audit.flush()
    items = await collector.wait_for(3)
    frames = await receiver.wait_for(3)
    assert [orjson.loads(f.msg) for f in frames] == items  # the same events on both
    assert [(i["class_uid"], i["status_id"]) for i in items] == [(4002, 1), (3002, 1), (3002, 2)]
    assert collector.posts[0][0]["Authorization"] == f"Bearer {SIEM_TOKEN}"
    assert all(ocsf_errors(i) == [] for i in items)
