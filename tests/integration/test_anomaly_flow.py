"""Anomaly detection on a real gateway: learn a route's normal, then a burst is reported three ways.

The window timer is set long (1h) so it never fires during the test; each window is closed by
calling ``tick`` after the manual clock moves, as the timer would.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml
from typer.testing import CliRunner

from portcullis.anomaly.webhook import SIGNATURE_HEADER, signature
from portcullis.cli.main import app as cli
from portcullis.testing import catch_all, serve_app

CONFIG = """
anomaly: {window: 1h, warmup_windows: 5, min_requests: 10}
routes:
  - {name: orders, path: "/orders/{order_id}", upstream: api}
"""


async def test_a_burst_after_a_learned_baseline_is_an_event_a_metric_and_an_entry_for_review(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, CONFIG))
    service = gw.services.anomaly
    assert service is not None
    key = {"X-API-Key": await gw.key("acme")}
    for window in range(8):
        for i in range(10 + window % 3):  # 10 to 12 requests a window: normal
            assert (await gw.client.get(f"/orders/{i}", headers=key)).status_code == 200
        gw.clock.advance(3600)
        assert service.tick() == []
    for i in range(60):  # five times the usual volume
        await gw.client.get(f"/orders/{i}", headers=key)
    gw.clock.advance(3600)
    found = {(a.kind, a.subject) for a in service.tick()}
    assert found == {("volume_spike", "route:orders"), ("volume_spike", "consumer:acme")}

    events = [r for r in await gw.audit_records() if r["class"] == "security"]
    assert {(e["event"]["outcome"], e["event"]["target"]) for e in events} == found
    assert all(e["event"]["action"] == "anomaly.detected" and e["event"]["observed"] == 60 for e in events)
    metrics = {s.labels.get("kind"): s.value for f in text_string_to_metric_families(gw.services.metrics.render()
               .decode()) for s in f.samples if s.name == "portcullis_anomalies_total"}
    assert metrics == {"volume_spike": 2.0}
    async with await gw.admin("security") as security:
        listed = (await security.get("/anomalies")).json()
    assert listed["enabled"] is True
    assert {(a["kind"], a["subject"]) for a in listed["anomalies"]} == found
    async with await gw.admin("admin") as admin:
        assert (await admin.get("/anomalies")).status_code == 403  # review_anomalies is the security team's
    async with gw.admin_listener() as url:
        def cli_as(token: str) -> Any:
            return CliRunner().invoke(cli, ["anomalies", "--admin", url], env={"COLUMNS": "200",
                                                                               "PORTCULLIS_ADMIN_TOKEN": token})
        shown = await asyncio.to_thread(cli_as, await gw.admin_token("security"))
        denied = await asyncio.to_thread(cli_as, await gw.admin_token("admin"))
    assert shown.exit_code == 0 and shown.output.count("volume_spike") == 2, shown.output
    assert "route:orders" in shown.output and "consumer:acme" in shown.output
    assert denied.exit_code == 3


async def test_observe_only_never_refuses_a_request(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, CONFIG.replace("warmup_windows: 5", "warmup_windows: 1")))
    key = {"X-API-Key": await gw.key("acme")}
    await gw.client.get("/orders/1", headers=key)
    gw.clock.advance(3600)
    gw.services.anomaly.tick()  # type: ignore[union-attr]
    statuses = {(await gw.client.get(f"/orders/{i}", headers=key)).status_code for i in range(100)}
    gw.clock.advance(3600)
    assert gw.services.anomaly.tick()  # type: ignore[union-attr]  # the burst is seen
    assert statuses == {200}  # and nothing was refused because of it


async def _spike(gw: Any, key: dict[str, str]) -> list[Any]:
    service = gw.services.anomaly
    for window in range(8):
        for i in range(10 + window % 3):
            await gw.client.get(f"/orders/{i}", headers=key)
        gw.clock.advance(3600)
        assert service.tick() == []
    for i in range(60):
        await gw.client.get(f"/orders/{i}", headers=key)
    gw.clock.advance(3600)
    found = service.tick()
    await service.respond(found)
    return found


async def test_an_automatic_block_stops_the_consumer_for_its_duration_then_expires(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, CONFIG.replace(
        "min_requests: 10}", "min_requests: 10, response: block, response_for: 10m}")))
    key = {"X-API-Key": await gw.key("acme")}
    await _spike(gw, key)
    refused = await gw.client.get("/orders/1", headers=key)
    assert refused.status_code == 403 and refused.json()["code"] == "access.blocked"
    [block] = await gw.services.controls.list_blocks()
    assert (block.kind, block.subject, block.created_by) == ("consumer", "acme", "anomaly:auto")
    gw.clock.advance(601)  # the response is bounded in time
    assert (await gw.client.get("/orders/1", headers=key)).status_code == 200
    acts = [(e["event"]["action"], e["event"]["actor"]) for e in await gw.audit_records() if e["class"] == "security"]
    assert ("block.create", "anomaly:auto") in acts


async def test_an_automatic_throttle_scales_the_route_and_consumer_limits_once(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, CONFIG.replace(
        "min_requests: 10}", "min_requests: 10, response: throttle, response_for: 10m, response_factor: 0.5}")))
    key = {"X-API-Key": await gw.key("acme")}
    found = await _spike(gw, key)
    await gw.services.anomaly.respond(found)  # type: ignore[union-attr]  # the same spike again: no second act
    emergencies = await gw.services.controls.list_emergencies()
    assert sorted((e.scope, e.subject, e.factor) for e in emergencies) == [("consumer", "acme", 0.5),
                                                                          ("route", "orders", 0.5)]
    assert all(e.until == gw.clock.wall() + 600 and e.created_by == "anomaly:auto" for e in emergencies)


async def test_each_detection_is_posted_signed_to_the_webhook(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    received: list[tuple[bytes, str]] = []
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers.get(SIGNATURE_HEADER, "")))
        if len(received) == 2:
            arrived.set()
        return web.Response(status=204)

    async with serve_app(catch_all(hook)) as port:
        gw = await make_gateway(gateway_yaml(upstream.url, CONFIG.replace(
            "min_requests: 10}", f'min_requests: 10, webhook: "http://127.0.0.1:{port}/hook", '
            'webhook_secret: "' + "w" * 32 + '"}')))
        found = await _spike(gw, {"X-API-Key": await gw.key("acme")})
        async with asyncio.timeout(10):
            await arrived.wait()
    bodies = [orjson.loads(body) for body, _ in received]
    assert {(b["kind"], b["subject"]) for b in bodies} == {(a.kind, a.subject) for a in found}
    assert all(sig == signature(b"w" * 32, body) for body, sig in received)


async def test_a_webhook_that_is_down_costs_nothing_but_a_count(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, CONFIG.replace(
        "min_requests: 10}", 'min_requests: 10, webhook: "http://127.0.0.1:9/hook", webhook_timeout: 1s}')))
    found = await _spike(gw, {"X-API-Key": await gw.key("acme")})
    webhook = gw.services.anomaly.webhook  # type: ignore[union-attr]
    assert webhook is not None and found
    async with asyncio.timeout(10):
        while webhook.dropped < len(found):
            await asyncio.sleep(0.02)
    assert webhook.sent == 0
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": await gw.key("other")})).status_code == 200
