"""Whether the durable store answers, as a gauge an alert can watch (``portcullis_store_up``).

Why a periodic probe: ``/readyz`` asks the store only when something asks ``/readyz``, and with
PostgreSQL down a gateway stays ready on purpose (cached keys, spilled audit), so neither tells
Prometheus the store is gone. One ``ping`` every ``every_s`` seconds (an operational timer on the
event loop's time, like the audit writer's) keeps the last answer; a ping that does not answer
within ``timeout_s`` counts as down.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from portcullis.background import stop_task
from portcullis.errors import StoreUnavailable

__all__ = ["StoreProbe"]

log = logging.getLogger("portcullis.store")


class _Pingable(Protocol):
    async def ping(self) -> None: ...


class StoreProbe:
    def __init__(self, store: _Pingable, *, every_s: float = 5.0, timeout_s: float = 2.0) -> None:
        self._store = store
        self._every = every_s
        self._timeout = timeout_s
        self.up = True  # until a probe says otherwise: a gateway starts only with a store that opened
        self._task: asyncio.Task[None] | None = None

    async def probe(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                await self._store.ping()
        except (StoreUnavailable, TimeoutError):
            answered = False
        else:
            answered = True
        if answered != self.up:
            log.warning("the store is %s", "answering again" if answered else "not answering")
        self.up = answered
        return answered

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._every_interval(), name="portcullis-store-probe")

    async def _every_interval(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            await self.probe()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
