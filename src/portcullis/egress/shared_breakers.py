"""Egress breaker states shared by every instance: when one opens a route's breaker, all do.

The states live in a ``stores.base.BreakerStateStore`` (Redis: ``stores.redis_breakers``); this
module only moves the breakers. Nothing here is on a call's path: a breaker decides from its own
memory, and writes go on in the background. If the store is down, each instance's breaker works
alone, as without shared state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from portcullis.egress.breaker import BreakerState, CircuitBreaker
from portcullis.errors import StoreUnavailable
from portcullis.stores.base import BreakerStateStore, SharedBreakerState

__all__ = ["SharedBreakers"]

log = logging.getLogger("portcullis.egress")


class SharedBreakers:
    def __init__(self, store: BreakerStateStore, breakers: Mapping[str, CircuitBreaker]) -> None:
        self._store = store
        self._breakers = dict(breakers)
        self._writes: set[asyncio.Task[None]] = set()
        for breaker in self._breakers.values():
            breaker.on_shared = self._moved

    def _moved(self, route: str, state: BreakerState, open_for_s: float) -> None:
        task = asyncio.get_running_loop().create_task(self._write(route, state, open_for_s))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, route: str, state: BreakerState, open_for_s: float) -> None:
        try:
            await self._store.share(route, state.value, open_for_s)
        except StoreUnavailable as exc:
            log.warning("breaker %s: could not share %s (%s)", route, state.value, exc)

    async def load(self) -> None:
        """Adopt the states other instances left on record (start-up, reload, reconnect)."""
        try:
            states = await self._store.states(list(self._breakers))
        except StoreUnavailable as exc:
            log.warning("could not read shared breaker states (%s)", exc)
            return
        for shared in states:
            self._adopt(shared)

    def on_event(self, kind: str, origin: str, data: Mapping[str, Any]) -> None:
        shared = self._store.moved(kind, origin, data)
        if shared is not None:
            self._adopt(shared)

    def _adopt(self, shared: SharedBreakerState) -> None:
        breaker = self._breakers.get(shared.route)
        if breaker is None:
            return
        try:
            moved_to = BreakerState(shared.state)
        except ValueError:
            return
        breaker.adopt(moved_to, shared.open_for_s)

    async def aclose(self) -> None:
        """Let pending writes finish (bounded by the store client's timeout)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
