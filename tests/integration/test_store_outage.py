"""PostgreSQL goes away under a running gateway and comes back: what keeps working, what says 503,
and that the audit trail loses and duplicates nothing.

The gateway reaches the machine's PostgreSQL through a TCP proxy the test cuts and restores, so
the database outage is real (refused connects, reset connections) while PostgreSQL itself, shared
with other tests, keeps running.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from tests.conftest import PEPPER, Gateway, GatewayFactory, UpstreamServer, gateway_yaml
from tests.pg import pg_admin, upgraded_schema
from tests.tcp_proxy import TcpProxy

from portcullis.admin.app import create_admin_app

pytestmark = pytest.mark.faults


@pytest.fixture
async def proxied_pg() -> AsyncIterator[tuple[TcpProxy, str]]:
    async with upgraded_schema() as schema:
        proxy = TcpProxy("127.0.0.1", 5432)
        await proxy.start()
        try:
            yield proxy, schema
        finally:
            await proxy.aclose()


def config(upstream_url: str, port: int, schema: str) -> str:
    return gateway_yaml(upstream_url, f"""
keys: {{pepper: "{PEPPER}", cache_ttl: 1h}}
routes:
  - {{name: orders, path: "/orders/{{rest:path}}", upstream: api, auth: {{api_key: {{}}}}}}
  - {{name: open, path: "/open/{{rest:path}}", upstream: api, auth: none}}
""", keys=False).replace(
        'store: {url: "sqlite:///gateway.db"}',
        f'store: {{url: "postgresql://postgres:postgres@127.0.0.1:{port}/test?sslmode=disable", schema: {schema},'
        " connect_timeout: 1s, statement_timeout: 1s}",
    )


def admin(gw: Gateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(create_admin_app(gw.app)), base_url="http://admin")


def spilled_gauge(metrics: str) -> float:
    line = next(li for li in metrics.splitlines() if li.startswith("portcullis_audit_spilled_records "))
    return float(line.split()[1])


async def stored_ids(schema: str) -> list[str]:
    conn = await pg_admin(server_settings={"search_path": schema})
    try:
        return [r["id"] for r in await conn.fetch("SELECT id FROM audit")]
    finally:
        await conn.close()


async def test_a_database_outage_keeps_cached_keys_working_refuses_new_keys_and_loses_no_audit(
    proxied_pg: tuple[TcpProxy, str], make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    proxy, schema = proxied_pg
    gw = await make_gateway(config(upstream.url, proxy.port, schema))
    async with admin(gw) as api:
        created = await api.post("/keys", json={"consumer": "alice", "scopes": ["orders:read"]})
        assert created.status_code == 201
        key = created.json()["key"]
        headers = {"X-API-Key": key}
        assert (await gw.client.get("/orders/1", headers=headers)).status_code == 200  # cached from here on

        await proxy.cut()
        during = [(await gw.client.get(f"/orders/{n}", headers=headers)).status_code for n in range(20)]
        during += [(await gw.client.get(f"/open/{n}")).status_code for n in range(20)]
        assert during == [200] * 40  # cached keys and public routes do not need the database

        refused = await api.post("/keys", json={"consumer": "bob"})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "store.unavailable" and "Traceback" not in refused.text
        unknown = await gw.client.get("/orders/1", headers={"X-API-Key": "pcl_unknownkey01_" + "a" * 43})
        assert unknown.status_code == 503 and unknown.json()["code"] == "service.unavailable"
        ready = await api.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["store"] == "degraded"

        await gw.services.audit.flush()
        assert gw.services.audit.stats.spilled > 0  # the database sink's batches wait in a spill file
        assert spilled_gauge((await api.get("/metrics")).text) > 0  # and an SRE can see them wait

        await proxy.restore()
        gw.clock.advance(1.0)  # the sink's first retry after the outage is due (it backs off while down)
        await gw.services.audit.flush()  # replays the spill file, in order, before anything new
        assert spilled_gauge((await api.get("/metrics")).text) == 0
        assert (await api.post("/keys", json={"consumer": "bob"})).status_code == 201

    answered = {r["request_id"]: r["id"] for r in await gw.audit_records()}
    ids = await stored_ids(schema)
    assert sorted(ids) == sorted(set(ids))  # nothing twice
    assert set(answered.values()) <= set(ids)  # nothing lost: every record the file has, the database has
    assert len(answered) == 42  # 1 + 40 + 1 requests (admin calls are not proxied traffic)
