"""Three gateway processes under load while their Redis dies and their database connections are killed.

What must hold (fail-open mode): no request gets a gateway-made 5xx, every answered request is in
the shared audit table exactly once, and the instances report ``degraded`` while Redis is away and
recover on their own when it is back. Redis here is a private ``redis-server`` the test kills and
restarts; PostgreSQL is the machine's, and the test terminates the gateways' backends
(``pg_terminate_backend``), found by the application name that carries the test's schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from tests.cluster import AdminAuth, Served, cluster_config, run_cli, start
from tests.conftest import UpstreamServer, missing_service
from tests.pg import PG_URL, fresh_schema, pg_admin, pg_reachable
from tests.redis_server import PrivateRedis

pytestmark = pytest.mark.faults

LIMITED = '  - {name: limited, path: "/limited/{rest:path}", upstream: api, auth: none,' \
          ' rate_limits: [{name: per-ip, key: ip, rates: ["100000/minute"]}]}'


class Faulty:
    def __init__(self, instances: list[Served], schema: str, redis: PrivateRedis) -> None:
        self.instances = instances
        self.schema = schema
        self.redis = redis

    async def load(self, client: httpx.AsyncClient, total: int, *, at: int, fault: Callable[[], Awaitable[None]],
                   ) -> list[int]:
        """``total`` requests, 8 at a time, spread over the instances; ``fault`` runs once ``at`` were sent."""
        statuses: list[int] = []
        sent = 0
        fault_task: asyncio.Task[None] | None = None

        async def worker() -> None:
            nonlocal sent, fault_task
            while sent < total:
                n = sent
                sent += 1
                if n == at:
                    fault_task = asyncio.create_task(fault())
                gateway = self.instances[n % len(self.instances)]
                statuses.append((await client.get(f"{gateway.base}/limited/{n}")).status_code)

        await asyncio.gather(*(worker() for _ in range(8)))
        if fault_task is not None:
            await fault_task
        return statuses

    async def audited(self, route: str) -> list[str]:
        conn = await pg_admin(server_settings={"search_path": self.schema})
        try:
            return [r["id"] for r in await conn.fetch("SELECT id FROM audit WHERE route = $1", route)]
        finally:
            await conn.close()

    async def wait_audited(self, route: str, count: int) -> list[str]:
        async with asyncio.timeout(20):
            while len(ids := await self.audited(route)) < count:
                await asyncio.sleep(0.1)
        return ids


@pytest.fixture
async def faulty(tmp_path: Path, upstream: UpstreamServer, private_redis: PrivateRedis) -> AsyncIterator[Faulty]:
    if not await pg_reachable():
        missing_service(f"PostgreSQL is not reachable at {PG_URL}")
    async with fresh_schema() as schema:
        text = cluster_config(upstream_url=upstream.url, pg_url=PG_URL, schema=schema,
                              redis_url=f"redis://127.0.0.1:{private_redis.port}/0", key_prefix="pclfault:",
                              extra_routes=LIMITED)
        config = tmp_path / "upgrade.yaml"
        await asyncio.to_thread(config.write_text, text)
        code, out = await run_cli("db", "upgrade", "--config", str(config), cwd=tmp_path)
        assert code == 0, out
        instances = await asyncio.gather(*(start(tmp_path / f"i{n}", text) for n in range(3)))
        try:
            yield Faulty(list(instances), schema, private_redis)
        finally:
            await asyncio.gather(*(i.stop() for i in instances))


async def shared_state_checks(client: httpx.AsyncClient, instances: list[Served]) -> list[str]:
    return [(await client.get(g.admin + "/readyz")).json()["checks"]["shared_state"] for g in instances]


async def test_redis_dying_and_returning_under_load_costs_no_5xx_and_no_audit_record(faulty: Faulty) -> None:
    async with httpx.AsyncClient(timeout=10, auth=AdminAuth(*faulty.instances)) as client:
        seen_degraded: list[list[str]] = []

        async def outage() -> None:
            await faulty.redis.kill()
            seen_degraded.append(await shared_state_checks(client, faulty.instances))
            await asyncio.sleep(0.5)  # the outage lasts while the load keeps coming
            await faulty.redis.start()

        statuses = await faulty.load(client, 600, at=150, fault=outage)
        assert statuses == [200] * 600  # fail open: Redis down is never the client's 5xx (nor a 429 here)
        assert seen_degraded == [["degraded"] * 3]
        async with asyncio.timeout(10):  # recovery is automatic (the probe itself asks Redis)
            while await shared_state_checks(client, faulty.instances) != ["ok"] * 3:
                await asyncio.sleep(0.1)
        metrics = (await client.get(faulty.instances[0].admin + "/metrics")).text
        assert "portcullis_shared_state_degraded 0.0" in metrics
    ids = await faulty.wait_audited("limited", 600)
    assert len(ids) == len(set(ids)) == 600  # every request once: none lost, none doubled


async def test_database_connections_killed_under_load_cost_no_5xx_and_no_audit_record(faulty: Faulty) -> None:
    killed: list[int] = []

    async def terminate() -> None:
        conn = await pg_admin()
        try:
            for _ in range(3):
                killed.append(await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                    f"portcullis/{faulty.schema}"))
                await asyncio.sleep(0.15)
        finally:
            await conn.close()

    async with httpx.AsyncClient(timeout=10) as client:
        statuses = await faulty.load(client, 600, at=100, fault=terminate)
    assert killed[0] >= 3  # every instance had at least one pooled connection, and lost it
    assert statuses == [200] * 600
    ids = await faulty.wait_audited("limited", 600)
    assert len(ids) == len(set(ids)) == 600
