"""Egress breaker states shared by every instance: when one opens a route's breaker, all do.

Why keys and events both: the event moves every listening instance at once; the key
(``<prefix>{pclk}:breaker:<route>``, expiring with the open period) is what an instance reads when
it starts, reloads, or reconnects after missing events. An open state is shared with what is left
of its open period, so every instance probes again at about the same time; forced states (an
operator's) have no expiry and last until a reset, which deletes the key.

Nothing here is on a call's path: a breaker decides from its own memory, and writes to Redis go on
in the background. If Redis is down, each instance's breaker works alone, as without shared state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from redis.exceptions import RedisError

from portcullis.egress.breaker import BreakerState, CircuitBreaker
from portcullis.stores.redis_events import BREAKER_EVENT, Event
from portcullis.stores.shared_state import SharedState

__all__ = ["SharedBreakers"]

log = logging.getLogger("portcullis.egress")


class SharedBreakers:
    def __init__(self, shared: SharedState, breakers: Mapping[str, CircuitBreaker]) -> None:
        self._shared = shared
        self._breakers = dict(breakers)
        self._writes: set[asyncio.Task[None]] = set()
        for breaker in self._breakers.values():
            breaker.on_shared = self._moved

    def _key(self, route: str) -> str:
        return self._shared.key("{pclk}", "breaker", route)

    def _moved(self, route: str, state: BreakerState, open_for_s: float) -> None:
        task = asyncio.get_running_loop().create_task(self._write(route, state, open_for_s))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, route: str, state: BreakerState, open_for_s: float) -> None:
        client, key = self._shared.client, self._key(route)
        try:
            if state is BreakerState.CLOSED:
                await client.delete(key)
            elif state is BreakerState.OPEN:
                await client.set(key, state.value, px=max(1, int(open_for_s * 1000)))
            else:
                await client.set(key, state.value)
        except (RedisError, OSError) as exc:
            log.warning("breaker %s: could not share %s (%s)", route, state.value, type(exc).__name__)
            return
        await self._shared.events.publish(BREAKER_EVENT, route=route, state=state.value, open_for_s=open_for_s)

    async def load(self) -> None:
        """Adopt the states other instances left in Redis (start-up, reload, reconnect)."""
        if not self._breakers:
            return
        routes = list(self._breakers)
        try:
            async with self._shared.client.pipeline(transaction=False) as pipe:
                for route in routes:
                    pipe.get(self._key(route))
                    pipe.pttl(self._key(route))
                answers = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("could not read shared breaker states (%s)", type(exc).__name__)
            return
        for index, route in enumerate(routes):
            value, ttl_ms = answers[2 * index], answers[2 * index + 1]
            if value is None:
                continue
            self._adopt(route, value.decode() if isinstance(value, bytes) else str(value),
                        ttl_ms / 1000 if ttl_ms and ttl_ms > 0 else 0.0)

    def on_event(self, event: Event) -> None:
        if event.kind != BREAKER_EVENT or event.origin == self._shared.instance_id:
            return
        try:
            open_for_s = float(event.data.get("open_for_s", 0.0))
        except (TypeError, ValueError):
            return
        self._adopt(str(event.data.get("route")), str(event.data.get("state")), open_for_s)

    def _adopt(self, route: str, state: str, open_for_s: float) -> None:
        breaker = self._breakers.get(route)
        if breaker is None:
            return
        try:
            moved_to = BreakerState(state)
        except ValueError:
            return
        breaker.adopt(moved_to, open_for_s)

    async def aclose(self) -> None:
        """Let pending writes finish (bounded by the client's timeout)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
