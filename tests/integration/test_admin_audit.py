"""The audit routes of the admin API (``admin/routes/audit.py``) as operators use them: who may read
which records, pages with a cursor, a streamed export, verify, retention, and the security event
each call leaves. The router is mounted here beside the others as ``admin.app`` will mount it.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest
from tests.conftest import Gateway, GatewayFactory, UpstreamServer, gateway_yaml

from portcullis.admin.app import create_admin_app
from portcullis.admin.routes import audit as audit_routes

ROUTES = """
routes:
  - {name: orders, path: "/orders/{order_id}", upstream: api}
"""
DAY = 86_400.0


async def admin(gw: Gateway, role: str, consumers: tuple[str, ...] = ()) -> httpx.AsyncClient:
    token = await gw.admin_token(role, consumers)
    app = create_admin_app(gw.app)
    app.include_router(audit_routes.router)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://127.0.0.1",
                             headers={"Authorization": f"Bearer {token}"})


async def traffic(gw: Gateway) -> None:
    alice, bob = await gw.key("alice"), await gw.key("bob")
    for n in range(6):
        await gw.client.get(f"/orders/{n}", headers={"X-API-Key": alice if n % 2 else bob})
    await gw.services.audit.flush()


async def events(gw: Gateway, action: str) -> list[dict[str, Any]]:
    return [r for r in await gw.audit_records() if r["class"] == "security" and r["event"]["action"] == action]


@pytest.fixture
async def gw(make_gateway: GatewayFactory, upstream: UpstreamServer) -> Gateway:
    gateway = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    await traffic(gateway)
    return gateway


async def test_a_compliance_operator_pages_through_the_trail_with_a_cursor(gw: Gateway) -> None:
    async with await admin(gw, "compliance") as client:
        answer = await client.get("/audit/records", params={"route": "orders", "limit": 4})
        assert answer.status_code == 200, answer.text
        first = answer.json()
        rest = (await client.get("/audit/records", params={"route": "orders", "cursor": first["next_cursor"]})).json()
    paths = [r["path"] for r in first["records"] + rest["records"]]  # one instant on the test clock: by id
    assert sorted(paths) == [f"/orders/{n}" for n in range(6)] and rest["next_cursor"] is None
    searches = await events(gw, "audit.search")
    assert sorted(e["event"]["returned"] for e in searches) == [2, 4]
    assert {(e["event"]["outcome"], e["event"]["role"]) for e in searches} == {("ok", "compliance")}


async def test_a_developer_reads_only_request_records_of_their_own_consumers(gw: Gateway) -> None:
    async with await admin(gw, "developer", consumers=("alice",)) as client:
        own = await client.get("/audit/consumers/alice/records")
        other = await client.get("/audit/consumers/bob/records")
        everything = await client.get("/audit/records", params={"class": "request"})
    assert own.status_code == 200
    assert sorted(r["path"] for r in own.json()["records"]) == ["/orders/1", "/orders/3", "/orders/5"]
    assert {r["class"] for r in own.json()["records"]} == {"request"}
    assert [r.status_code for r in (other, everything)] == [403, 403]
    assert other.json()["code"] == "authz.forbidden"


async def test_an_admin_reads_request_records_and_never_security_events(gw: Gateway) -> None:
    async with await admin(gw, "admin") as client:
        unnamed = await client.get("/audit/records")  # no class named: the request records only
        assert (await client.get("/audit/records", params={"class": "security"})).status_code == 403
        named = await client.get("/audit/records", params={"class": "request"})
    assert unnamed.status_code == named.status_code == 200
    assert unnamed.json()["records"] == named.json()["records"] and len(named.json()["records"]) == 6
    assert {r["class"] for r in unnamed.json()["records"]} == {"request"}


async def test_an_altered_cursor_is_a_malformed_request(gw: Gateway) -> None:
    async with await admin(gw, "compliance") as client:
        answer = await client.get("/audit/records", params={"cursor": "bm90LWEtY3Vyc29y"})
    assert answer.status_code == 400 and answer.json()["code"] == "request.malformed"


async def test_export_streams_csv_and_is_itself_audited(gw: Gateway) -> None:
    async with await admin(gw, "compliance") as client:
        answer = await client.get("/audit/export", params={"format": "csv", "consumer": "alice"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert sorted(r["path"] for r in rows) == ["/orders/1", "/orders/3", "/orders/5"]
    [event] = await events(gw, "audit.export")
    assert event["event"]["format"] == "csv" and event["event"]["filters"] == {"consumer": "alice"}


async def test_only_compliance_may_export_verify_and_run_retention(gw: Gateway) -> None:
    for role in ("developer", "admin", "security"):
        async with await admin(gw, role, consumers=("alice",)) as client:
            assert (await client.get("/audit/export", params={"class": "request"})).status_code == 403, role
            assert (await client.post("/audit/verify")).status_code == 403, role
            assert (await client.post("/audit/retention/run")).status_code == 403, role


async def test_verify_reports_the_store_and_the_files_verified(gw: Gateway) -> None:
    async with await admin(gw, "compliance") as client:
        report = (await client.post("/audit/verify")).json()
    assert report["store"]["ok"] and report["files"]["ok"]
    assert {c["chain"].split("/")[1] for c in report["store"]["chains"]} >= {"request"}


async def test_retention_run_removes_what_expired_on_the_gateway_clock(gw: Gateway) -> None:
    # the writer checkpoints every minute: advance past one so the records are attested, then past retention
    gw.clock.advance(61)
    await traffic(gw)
    gw.clock.advance(91 * DAY)
    async with await admin(gw, "compliance") as client:
        policy = (await client.get("/audit/retention")).json()
        run = (await client.post("/audit/retention/run")).json()
        left = (await client.get("/audit/records", params={"class": "request"})).json()["records"]
        report = (await client.post("/audit/verify")).json()
    assert policy["request_s"] == 90 * DAY and policy["compliance_s"] == 2557 * DAY
    assert run["deleted"]["request"] >= 6
    assert len(left) < 12 and report["store"]["ok"]
