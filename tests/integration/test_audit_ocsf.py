"""OCSF events from a real gateway's audit trail, checked against the published OCSF schema.

One gateway serves an API-key route, the egress door (with a vault credential), the admin API and
anomaly detection; real traffic through it writes the records, and every record it wrote is
mapped and validated offline (``tests/ocsf_schema.py``). The admin API's export in ``ocsf`` format
is the same mapping of the stored records.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from ipaddress import ip_address
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from tests.conftest import Gateway, GatewayFactory, UpstreamServer, gateway_yaml
from tests.ocsf_schema import ocsf_errors

from portcullis.admin.app import create_admin_app
from portcullis.audit.ocsf import OCSF_VERSION, to_ocsf, to_ocsf_all
from portcullis.egress.resolver import StaticResolver
from portcullis.testing import catch_all, serve_app
from portcullis.vault import generate_master_key

MASTER = generate_master_key()
TOKEN = "ghp_" + "0csfT0k3n" * 4


def config(upstream_url: str, provider_port: int) -> str:
    return gateway_yaml(upstream_url, f"""
anomaly: {{window: 1h, warmup_windows: 5, min_requests: 10}}
routes:
  - {{name: orders, path: "/orders/{{order_id}}", upstream: api}}
egress:
  routes:
    - name: partner
      url: "http://api.partner.test:{provider_port}"
      allow_http: true
      allow_networks: [127.0.0.0/8]
      headers: {{Authorization: "Bearer {{secret:partner_token}}"}}
""")


@pytest.fixture
async def provider() -> AsyncIterator[int]:
    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async with serve_app(catch_all(handle)) as port:
        yield port


@pytest.fixture
async def busy_gateway(make_gateway: GatewayFactory, upstream: UpstreamServer, provider: int) -> Gateway:
    """A gateway after traffic of every kind the mapping knows."""
    gw = await make_gateway(
        config(upstream.url, provider), env={"PORTCULLIS_SECRET_KEY": MASTER},
        resolver=StaticResolver({"api.partner.test": [[ip_address("127.0.0.1")]]}), secrets={"partner_token": TOKEN},
    )
    key = {"X-API-Key": await gw.key("acme")}
    service = gw.services.anomaly
    assert service is not None
    for window in range(8):  # a learned baseline, then a burst: one detection per subject
        for i in range(10 + window % 3):
            assert (await gw.client.get(f"/orders/{i}", headers=key)).status_code == 200
        gw.clock.advance(3600)
        assert service.tick() == []
    for i in range(60):
        await gw.client.get(f"/orders/{i}", headers=key)
    gw.clock.advance(3600)
    assert service.tick()
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": "pcl_wrong1_Wr0ngS3cr3tW0rd"})).status_code == 401
    egress = await gw.client.post("/egress/partner/v1/issues", json={"t": 1},
                                  headers={**key, "X-Workflow-Id": "wf-1", "X-Execution-Id": "ex-1"})
    assert egress.status_code == 200
    async with await gw.admin("admin") as admin:
        assert (await admin.post("/keys", json={"consumer": "globex"})).status_code == 201
    async with httpx.AsyncClient(transport=httpx.ASGITransport(create_admin_app(gw.app)), base_url="http://127.0.0.1",
                                 headers={"Authorization": "Bearer pt_not_a_token"}) as stranger:
        assert (await stranger.get("/keys")).status_code == 401
    await gw.services.audit.flush()  # every record in the file and the store before a test reads them
    return gw


def _kinds(events: list[dict[str, Any]]) -> set[tuple[int, int]]:
    return {(e["class_uid"], e["status_id"]) for e in events}


async def test_every_record_of_a_real_gateway_is_a_valid_ocsf_event_of_its_class(busy_gateway: Gateway) -> None:
    records = await busy_gateway.audit_records()
    events = to_ocsf_all(records)
    for event in events:
        assert ocsf_errors(event) == [], event
        assert event["type_uid"] == event["class_uid"] * 100 + event["activity_id"]
        assert event["metadata"]["version"] == OCSF_VERSION
    assert _kinds(events) >= {
        (4002, 1),  # HTTP Activity: served requests and the egress call
        (3002, 1),  # Authentication: a request with a valid API key
        (3002, 2),  # Authentication: a wrong API key, a wrong admin token
        (6003, 1),  # API Activity: key.create on the admin API, secret.read by the egress door
        (2004, 1),  # Detection Finding: the volume spike (status New)
    }
    by_uid: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_uid.setdefault(event["metadata"]["uid"], []).append(event)
    assert set(by_uid) == {r["id"] for r in records}  # every record is in the stream, under its own id


async def test_each_record_lands_in_the_attributes_an_analyst_searches(busy_gateway: Gateway) -> None:
    records = await busy_gateway.audit_records()

    def events_of(predicate: Any) -> list[dict[str, Any]]:
        return [e for r in records if predicate(r) for e in to_ocsf(r)]

    [egress, egress_auth] = events_of(lambda r: r["route"] == "egress")
    assert egress["class_uid"] == 4002 and egress["activity_name"] == "Post"
    assert egress_auth["class_uid"] == 3002 and egress_auth["user"]["uid"] == "acme"
    assert egress["dst_endpoint"] == {"hostname": "api.partner.test"}
    assert egress["http_request"]["url"] == {"path": "/egress/partner/v1/issues"}  # as called
    assert TOKEN not in orjson.dumps(egress).decode()  # the vault credential never reaches an event
    [wrong_key] = events_of(lambda r: r["decision"].startswith("auth_failed:"))
    assert (wrong_key["class_uid"], wrong_key["activity_id"], wrong_key["status_id"]) == (3002, 1, 2)
    assert wrong_key["src_endpoint"] == {"ip": "127.0.0.1"} and wrong_key["service"] == {"name": "orders"}
    assert "pcl_wrong1_Wr0ngS3cr3tW0rd" not in orjson.dumps(wrong_key).decode()
    [created] = events_of(lambda r: (r.get("event") or {}).get("action") == "key.create")
    assert created["api"]["operation"] == "key.create" and created["activity_name"] == "Create"
    assert created["actor"]["user"]["type"] == "admin" and created["http_response"]["code"] == 201
    [admin_refused] = events_of(lambda r: (r.get("event") or {}).get("action") == "admin.auth")
    assert admin_refused["class_uid"] == 3002 and admin_refused["service"] == {"name": "portcullis-admin"}
    findings = events_of(lambda r: (r.get("event") or {}).get("action") == "anomaly.detected")
    assert {f["finding_info"]["title"] for f in findings} == {"volume_spike on route:orders",
                                                               "volume_spike on consumer:acme"}
    chain = records[0]
    http = next(e for e in to_ocsf(chain) if e["class_uid"] == 4002)
    assert http["unmapped"]["portcullis"]["hash"] == chain["hash"]  # the event ties back to the sealed record
    assert http["time"] == round(chain["ts"] * 1000)


async def test_the_admin_export_in_ocsf_is_one_event_a_line_for_the_stored_records(busy_gateway: Gateway) -> None:
    async with await busy_gateway.admin("compliance") as client:
        answer = await client.get("/audit/export", params={"format": "ocsf", "class": "request"})
        stored = await client.get("/audit/export", params={"format": "jsonl", "class": "request"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/x-ndjson")
    assert answer.headers["content-disposition"] == 'attachment; filename="audit.ocsf.jsonl"'
    lines = answer.content.splitlines()
    events = [orjson.loads(line) for line in lines]
    assert events == to_ocsf_all(orjson.loads(line) for line in stored.content.splitlines())
    assert all(ocsf_errors(e) == [] for e in events)
    assert {e["metadata"]["log_name"] for e in events} == {"request"}
