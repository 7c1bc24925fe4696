"""Limits when Redis goes away and comes back, against a private redis-server this test owns.

The machine's shared Redis is never stopped: each test starts its own ``redis-server`` on a free
127.0.0.1 port (no persistence), kills it by PID, and restarts it on the same port.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from tests.conftest import missing_service

from portcullis.config.types import RateWindow
from portcullis.limiting.rules import LimitRule
from portcullis.stores.failover import FailoverCounterStore
from portcullis.stores.redis_counters import RedisCounterStore
from portcullis.testing import ManualClock

pytestmark = pytest.mark.faults
REDIS_SERVER = shutil.which("redis-server")
RULE = LimitRule(name="per-key", windows=[RateWindow(10, 60.0)])


@dataclass
class PrivateRedis:
    port: int
    proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        assert REDIS_SERVER is not None
        self.proc = await asyncio.create_subprocess_exec(
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(10):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                await writer.wait_closed()
                return

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def private_redis() -> AsyncIterator[PrivateRedis]:
    if REDIS_SERVER is None:
        missing_service("redis-server is not installed")
    server = PrivateRedis(await asyncio.to_thread(_free_port))
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


async def make(port: int, on_failure: str, clock: ManualClock) -> FailoverCounterStore:
    # No client-side retries: the failover store decides what a failure means, at once.
    client = await asyncio.to_thread(lambda: Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5,
                                                   socket_timeout=0.5, retry=Retry(NoBackoff(), 0)))
    shared = RedisCounterStore(client, key_prefix=f"pcltest:{uuid.uuid4().hex}:", server_time=False)
    return FailoverCounterStore(shared, clock, instances=2, on_failure=on_failure)  # type: ignore[arg-type]


async def admitted(store: FailoverCounterStore, n: int, now: float, subject: str = "k") -> int:
    return sum([(await store.apply([(RULE, subject)], now, 1, commit=True)).allowed for _ in range(n)])


async def test_fail_open_uses_the_local_share_and_recovers(private_redis: PrivateRedis) -> None:
    clock = ManualClock()
    store = await make(private_redis.port, "open", clock)
    try:
        now = 1_700_000_000.0
        assert await admitted(store, 4, now) == 4 and not store.degraded  # counted in Redis
        await private_redis.kill()
        # 10 per minute shared by 2 instances: this one alone admits 5 while Redis is away,
        # and never answers with an error.
        assert await admitted(store, 8, now, "other") == 5
        assert store.degraded
        await private_redis.start()
        clock.advance(1.0)  # past the first reconnect backoff (0.5 s)
        assert (await store.apply([(RULE, "fresh")], now, 1, commit=True)).allowed
        assert not store.degraded  # back on the shared store
    finally:
        await store.aclose()


async def test_fail_closed_refuses_while_redis_is_away(private_redis: PrivateRedis) -> None:
    clock = ManualClock()
    store = await make(private_redis.port, "closed", clock)
    try:
        await private_redis.kill()
        decision = await store.apply([(RULE, "k")], 1_700_000_000.0, 1, commit=True)
        assert (decision.allowed, decision.violated, decision.retry_after_s) == (
            False, "shared_state_unavailable", 1.0)
    finally:
        await store.aclose()
