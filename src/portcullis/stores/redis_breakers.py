"""Egress breaker states in Redis: ``stores.base.BreakerStateStore`` for every instance.

Why keys and events both: the event moves every listening instance at once; the key
(``<prefix>{pclk}:breaker:<route>``, expiring with the open period) is what an instance reads when
it starts, reloads, or reconnects after missing events. An open state is shared with what is left
of its open period, so every instance probes again at about the same time; forced states (an
operator's) have no expiry and last until a reset, which deletes the key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redis.exceptions import RedisError

from portcullis.errors import StoreUnavailable
from portcullis.stores.base import SharedBreakerState
from portcullis.stores.redis_events import BREAKER_EVENT
from portcullis.stores.shared_state import SharedState

__all__ = ["RedisBreakerStates"]

_CLOSED, _OPEN = "closed", "open"


class RedisBreakerStates:
    def __init__(self, shared: SharedState) -> None:
        self._shared = shared

    def _key(self, route: str) -> str:
        return self._shared.key("{pclk}", "breaker", route)

    async def share(self, route: str, state: str, open_for_s: float) -> None:
        client, key = self._shared.client, self._key(route)
        try:
            if state == _CLOSED:
                await client.delete(key)
            elif state == _OPEN:
                await client.set(key, state, px=max(1, int(open_for_s * 1000)))
            else:
                await client.set(key, state)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"breaker_share:{type(exc).__name__}") from None
        await self._shared.events.publish(BREAKER_EVENT, route=route, state=state, open_for_s=open_for_s)

    async def states(self, routes: Sequence[str]) -> list[SharedBreakerState]:
        if not routes:
            return []
        try:
            async with self._shared.client.pipeline(transaction=False) as pipe:
                for route in routes:
                    pipe.get(self._key(route))
                    pipe.pttl(self._key(route))
                answers = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"breaker_states:{type(exc).__name__}") from None
        found = []
        for index, route in enumerate(routes):
            value, ttl_ms = answers[2 * index], answers[2 * index + 1]
            if value is None:
                continue
            state = value.decode() if isinstance(value, bytes) else str(value)
            found.append(SharedBreakerState(route, state, ttl_ms / 1000 if ttl_ms and ttl_ms > 0 else 0.0))
        return found

    def moved(self, kind: str, origin: str, data: Mapping[str, Any]) -> SharedBreakerState | None:
        if kind != BREAKER_EVENT or origin == self._shared.instance_id:
            return None
        try:
            open_for_s = float(data.get("open_for_s", 0.0))
        except (TypeError, ValueError):
            return None
        return SharedBreakerState(str(data.get("route")), str(data.get("state")), open_for_s)
