"""PostgreSQL goes away under a running gateway and comes back: what keeps working, what says 503,
and that the audit trail loses and duplicates nothing.

The gateway reaches the machine's PostgreSQL through a TCP proxy the test cuts and restores, so
the database outage is real (refused connects, reset connections) while PostgreSQL itself, shared
with other tests, keeps running.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.conftest import PEPPER, GatewayFactory, UpstreamServer, gateway_yaml
from tests.pg import PG_URL, pg_admin, upgraded_schema
from tests.tcp_proxy import TcpProxy

from portcullis.errors import StoreUnavailable
from portcullis.gateway.runtime import serving_runtime
from portcullis.http.context import RequestContext
from portcullis.pipeline.base import Decision, PolicyBase, Stage
from portcullis.pipeline.chain import PolicyChain
from portcullis.stores.postgres import PostgresStore
from portcullis.stores.redis_events import REVOKE_EVENT, Event
from portcullis.stores.shared_state import broadcast_once
from portcullis.vault import SECRET_KEY_ENV, generate_master_key

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


def config(upstream_url: str, port: int, schema: str, *, keys: str = "cache_ttl: 1h",
           store_timeouts: str = "connect_timeout: 1s, statement_timeout: 1s", extra: str = "") -> str:
    return gateway_yaml(upstream_url, f"""{extra}
keys: {{pepper: "{PEPPER}", {keys}}}
routes:
  - {{name: orders, path: "/orders/{{rest:path}}", upstream: api, auth: {{api_key: {{}}}}}}
  - {{name: open, path: "/open/{{rest:path}}", upstream: api, auth: none}}
""", keys=False).replace(
        'store: {url: "sqlite:///gateway.db"}',
        f'store: {{url: "postgresql://postgres:postgres@127.0.0.1:{port}/test?sslmode=disable", schema: {schema},'
        f" {store_timeouts}}}",
    )


def shared_state(prefix: str) -> str:
    return f'shared_state: {{url: "redis://127.0.0.1:6379/0", key_prefix: "{prefix}"}}'


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
    async with await gw.admin() as api:
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

    answered = {r["request_id"]: r["id"] for r in await gw.audit_records() if r["class"] == "request"}
    ids = await stored_ids(schema)
    assert sorted(ids) == sorted(set(ids))  # nothing twice
    assert set(answered.values()) <= set(ids)  # nothing lost: every record the file has, the database has
    assert len(answered) == 42  # 1 + 40 + 1 requests (admin calls are not proxied traffic)


async def test_readyz_answers_within_its_deadline_while_postgresql_hangs_and_names_the_check(
    proxied_pg: tuple[TcpProxy, str], make_gateway: GatewayFactory, upstream: UpstreamServer,
    redis_space: tuple[Any, str],
) -> None:
    proxy, schema = proxied_pg
    # The store's own timeouts at their defaults (5 s), as in the measured incident; Redis answers.
    gw = await make_gateway(config(upstream.url, proxy.port, schema, store_timeouts="",
                                   extra=shared_state(redis_space[1])))
    loop = asyncio.get_running_loop()
    async with await gw.admin() as api:
        assert (await api.get("/readyz")).json()["checks"]["store"] == "ok"
        proxy.hang()  # PostgreSQL accepts TCP and never answers
        try:
            for _ in range(2):  # the second asks while the first probe is still stuck
                started = loop.time()
                ready = await api.get("/readyz")
                took = loop.time() - started
                assert took < 3.0  # its deadline is 1 s; before the fix it answered after 7 s
                assert ready.status_code == 200  # a shared database down keeps the instance ready
                assert ready.json() == {
                    "status": "ready", "checks": {"config": "ok", "store": "degraded", "shared_state": "ok"},
                    "timed_out": ["store"],
                }
        finally:
            await proxy.restore()


def stale_served(metrics: str) -> float:
    line = next(li for li in metrics.splitlines() if li.startswith("portcullis_keys_served_stale_total "))
    return float(line.split()[1])


async def test_a_key_seen_before_answers_past_the_cache_ttl_until_stale_if_error_runs_out(
    proxied_pg: tuple[TcpProxy, str], make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    proxy, schema = proxied_pg
    gw = await make_gateway(config(upstream.url, proxy.port, schema, keys="cache_ttl: 5s, stale_if_error: 5m"))
    key = await gw.key("alice")
    headers = {"X-API-Key": key}
    assert (await gw.client.get("/orders/1", headers=headers)).status_code == 200  # read from the store now

    await proxy.cut()
    gw.clock.advance(60)  # twelve TTLs into the outage
    during = [(await gw.client.get(f"/orders/{n}", headers=headers)).status_code for n in range(10)]
    gw.clock.advance(300 - 60 - 1)  # the last second of stale use
    during.append((await gw.client.get("/orders/last", headers=headers)).status_code)
    assert during == [200] * 11
    unknown = await gw.client.get("/orders/1", headers={"X-API-Key": "pcl_unknownkey01_" + "a" * 43})
    assert unknown.status_code == 503 and unknown.json()["code"] == "service.unavailable"

    gw.clock.advance(1)  # five minutes since the store last said the key was valid
    after = await gw.client.get("/orders/2", headers=headers)
    assert after.status_code == 503 and after.json()["code"] == "service.unavailable"

    records = await gw.audit_records()
    assert [r["decision"] for r in records if r["path"].startswith("/orders/") and r["status"] == 200] == [
        "allowed"] + ["allowed:key_served_stale"] * 11
    assert stale_served(gw.services.metrics.render().decode()) == 11


async def test_a_key_revoked_over_redis_during_the_outage_is_refused_at_once(
    proxied_pg: tuple[TcpProxy, str], make_gateway: GatewayFactory, upstream: UpstreamServer,
    redis_space: tuple[Any, str],
) -> None:
    proxy, schema = proxied_pg
    prefix = redis_space[1]
    gw = await make_gateway(config(upstream.url, proxy.port, schema, keys="cache_ttl: 5s, stale_if_error: 5m",
                                   extra=shared_state(prefix)))
    shared = gw.services.shared
    assert shared is not None
    await asyncio.wait_for(shared.events.connected.wait(), 5)
    heard = asyncio.Event()

    async def on_event(event: Event) -> None:  # runs after the gateway's own handler
        if event.kind == REVOKE_EVENT:
            heard.set()

    shared.events.subscribe(on_event)
    key = await gw.key("alice")
    headers = {"X-API-Key": key}
    assert (await gw.client.get("/orders/1", headers=headers)).status_code == 200

    await proxy.cut()  # this gateway loses the database; the operator's CLI still reaches it
    gw.clock.advance(60)
    assert (await gw.client.get("/orders/2", headers=headers)).status_code == 200  # served stale
    key_id = key.split("_")[1]
    store = await PostgresStore.connect(PG_URL, schema=schema)
    try:
        assert await store.revoke(key_id, 1.0)
    finally:
        await store.aclose()
    assert await broadcast_once("redis://127.0.0.1:6379/0", key_prefix=prefix, timeout_s=2, kind=REVOKE_EVENT,
                                key_id=key_id)  # what `portcullis keys revoke` does
    await asyncio.wait_for(heard.wait(), 5)

    refused = await gw.client.get("/orders/3", headers=headers)
    assert refused.status_code == 503 and refused.json()["code"] == "service.unavailable"
    await proxy.restore()
    gw.clock.advance(5)
    assert (await gw.client.get("/orders/4", headers=headers)).json()["code"] == "auth.invalid_credentials"


async def test_a_key_seen_before_is_served_stale_while_postgresql_hangs(
    proxied_pg: tuple[TcpProxy, str], make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    proxy, schema = proxied_pg
    gw = await make_gateway(config(upstream.url, proxy.port, schema, keys="cache_ttl: 5s, stale_if_error: 5m"))
    key = await gw.key("alice")
    headers = {"X-API-Key": key}
    assert (await gw.client.get("/orders/1", headers=headers)).status_code == 200
    proxy.hang()
    try:
        gw.clock.advance(60)
        # The first waits out the store's own timeout (2 s here), the rest are answered from the stale record.
        statuses = await asyncio.gather(*(gw.client.get(f"/orders/{n}", headers=headers) for n in range(5)))
        statuses += [await gw.client.get(f"/orders/{n}", headers=headers) for n in range(5)]
        assert [r.status_code for r in statuses] == [200] * 10
    finally:
        await proxy.restore()


async def test_an_egress_credential_read_before_the_outage_is_still_injected_until_stale_if_error_runs_out(
    proxied_pg: tuple[TcpProxy, str], make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    proxy, schema = proxied_pg
    egress = f"""egress:
  routes:
    - {{name: partner, url: "{upstream.url}", allow_http: true, allow_networks: [127.0.0.0/8],
       headers: {{Authorization: "Bearer {{secret:partner_token}}"}}}}
"""
    gw = await make_gateway(config(upstream.url, proxy.port, schema, keys="cache_ttl: 1h, stale_if_error: 5m",
                                   extra=egress), env={SECRET_KEY_ENV: generate_master_key()})
    await gw.services.vault.set("partner_token", "sk-partner")
    key = await gw.key("agent")
    headers = {"X-API-Key": key, "X-Workflow-Id": "wf-1", "X-Execution-Id": "ex-1"}
    before = await gw.client.get("/egress/partner/v1/x", headers=headers)  # the key and the secret are read here
    assert before.status_code == 200, before.text

    await proxy.cut()
    gw.clock.advance(240)  # past the vault's one-second reuse: the store is asked, and cannot answer
    during = await gw.client.get("/egress/partner/v1/x", headers=headers)
    gw.clock.advance(61)  # 301 s after the secret was read: past stale_if_error
    after = await gw.client.get("/egress/partner/v1/x", headers=headers)
    metrics = gw.services.metrics.render().decode()
    await proxy.restore()

    assert during.status_code == 200, during.text
    assert [seen.header("authorization") for seen in upstream.seen] == ["Bearer sk-partner"] * 2
    assert "portcullis_secrets_served_stale_total 1.0" in metrics
    assert (after.status_code, after.json()["code"], after.headers["retry-after"]) == (503, "service.unavailable", "5")
    assert "partner_token" not in after.text and "Traceback" not in after.text
    assert len(upstream.seen) == 2  # nothing was sent without its credential
    records = [r for r in await gw.audit_records() if r["route"] == "egress"]
    assert [r["decision"] for r in records][-1] == "egress_refused:credential_unavailable:partner_token"
    assert 'portcullis_egress_refusals_total{kind="credential_unavailable",route="partner"} 1.0' in (
        gw.services.metrics.render().decode())


class _ReadsAStoreThatIsDown(PolicyBase):
    """A policy whose store fails with no rule of its own for the outage (a plug-in's, say)."""

    name = "test.store_down"
    stage = Stage.VALIDATE

    async def on_request(self, ctx: RequestContext) -> Decision | None:
        raise StoreUnavailable("postgres: connection refused")


async def test_a_store_failure_no_policy_answers_for_is_a_503_never_an_internal_error(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    # The net under every store's own outage rule (cached keys, local shares, spill files): the
    # PolicyBase extension point lets anyone add a policy that reads a store.
    gw = await make_gateway(gateway_yaml(upstream.url, "routes:\n  - {name: open, path: \"/open/{rest:path}\", "
                                                       "upstream: api, auth: none}\n"))
    runtime = serving_runtime(gw.app)
    route = runtime.routes["open"]
    route.chain = PolicyChain([*route.chain.policies, _ReadsAStoreThatIsDown()])
    answer = await gw.client.get("/open/x")
    assert (answer.status_code, answer.json()["code"], answer.headers["retry-after"]) == (
        503, "service.unavailable", "5")
    assert answer.json()["request_id"] == answer.headers["x-request-id"] and "Traceback" not in answer.text
    assert upstream.seen == []
    [record] = await gw.audit_records()
    assert (record["status"], record["decision"]) == (503, "store_unavailable")
    assert gw.services.metrics.registry.get_sample_value("portcullis_internal_errors_total") == 0
