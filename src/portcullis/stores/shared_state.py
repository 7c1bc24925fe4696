"""Everything a gateway instance shares through Redis, opened once per process.

One short-timeout client carries the decisions (rate-limit and budget scripts, breaker keys,
publishing); a second client, without a read timeout, only listens for events. One ``Outage``
tracks both stores, so ``/readyz`` and ``portcullis_shared_state_degraded`` report one state.

Why clients are built off the event loop: redis-py reads its package metadata when a client is
built. Why ``driver_info=None``: otherwise it does so again on every new connection for CLIENT
SETINFO. Why no retries of its own (``Retry(NoBackoff(), 0)``): the failover decides what an
unreachable Redis means, within ``shared_state.timeout``, instead of holding requests for seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from portcullis.clock import Clock
from portcullis.ids import random_hex
from portcullis.stores.failover import FailoverBudgetStore, FailoverCounterStore, Outage
from portcullis.stores.failover_reservations import FailoverReservationStore
from portcullis.stores.nonces import FailoverNonceStore, MemoryNonceStore, RedisNonceStore
from portcullis.stores.redis_budgets import RedisBudgetStore
from portcullis.stores.redis_counters import RedisCounterStore
from portcullis.stores.redis_events import RedisEventBus, encode_event
from portcullis.stores.redis_reservations import RedisReservationStore

__all__ = ["SharedState", "broadcast_once", "build_redis_client", "open_shared_state"]


@dataclass(slots=True)
class SharedState:
    client: Redis
    key_prefix: str
    instance_id: str
    outage: Outage
    counters: FailoverCounterStore
    budgets: FailoverBudgetStore
    reservations: FailoverReservationStore  # LLM routes' token and cost reservations (one script per step)
    events: RedisEventBus
    nonces: FailoverNonceStore  # signed requests' single-use nonces (one SET NX PX each)
    _listener: Redis

    @property
    def degraded(self) -> bool:
        return self.outage.degraded

    async def probe(self) -> bool:
        """Ask Redis now (the readiness probe), so an idle instance notices an outage, and a recovery,
        without waiting for traffic. True when it answered; either way ``degraded`` is up to date."""
        try:
            await self.client.ping()
        except (RedisError, OSError) as exc:  # OSError includes TimeoutError
            self.outage.failed(exc)
            return False
        self.outage.recovered()
        return True

    def key(self, *parts: str) -> str:
        """A key of this gateway's (its prefix) outside the counter and budget scripts."""
        return self.key_prefix + ":".join(parts)

    async def aclose(self) -> None:
        await self.events.aclose()
        await self.counters.aclose()
        with contextlib.suppress(Exception):
            await self._listener.aclose()


async def build_redis_client(url: str, *, timeout_s: float | None, **extra: Any) -> Redis:
    """A client for ``url`` that fails within ``timeout_s`` and never retries on its own."""
    return await asyncio.to_thread(lambda: Redis.from_url(
        url, socket_connect_timeout=timeout_s if timeout_s is not None else 5.0, socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0), driver_info=None, **extra,
    ))


async def open_shared_state(
    url: str, clock: Clock, *, key_prefix: str, instances: int, on_failure: Literal["open", "closed"],
    budgets_on_failure: Literal["open", "closed"], timeout_s: float, server_time: bool = True,
) -> SharedState:
    """Clients, stores and the event bus (not yet listening: call ``events.start()``). Connects lazily:
    a Redis that is down at start-up is an outage like any other, not a failure to start."""
    client = await build_redis_client(url, timeout_s=timeout_s)
    listener = await build_redis_client(url, timeout_s=None, health_check_interval=10)
    outage = Outage(clock)
    instance_id = random_hex(64)
    return SharedState(
        client=client, key_prefix=key_prefix, instance_id=instance_id, outage=outage,
        counters=FailoverCounterStore(RedisCounterStore(client, key_prefix=key_prefix, server_time=server_time),
                                      clock, instances=instances, on_failure=on_failure, outage=outage),
        budgets=FailoverBudgetStore(RedisBudgetStore(client, key_prefix=key_prefix, server_time=server_time),
                                    outage, instances=instances, on_failure=budgets_on_failure),
        reservations=FailoverReservationStore(
            RedisReservationStore(client, key_prefix=key_prefix, server_time=server_time), outage,
            instances=instances, on_failure=budgets_on_failure),
        events=RedisEventBus(client, listener, channel=f"{key_prefix}events", instance_id=instance_id),
        nonces=FailoverNonceStore(RedisNonceStore(client, key_prefix=key_prefix), MemoryNonceStore(clock), outage,
                                  on_failure=on_failure),
        _listener=listener,
    )


async def broadcast_once(url: str, *, key_prefix: str, timeout_s: float, kind: str, **data: Any) -> bool:
    """Publish one event from outside a gateway (the CLI). False when Redis cannot be reached."""
    client = await build_redis_client(url, timeout_s=timeout_s)
    try:
        await client.publish(f"{key_prefix}events", encode_event(kind, "cli", data))
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()
    return True
