"""Single-use nonces for signed requests: in memory on one machine, in Redis across instances.

Why a nonce store at all: a signature is valid for the whole clock-skew window, so without it a
captured request could be sent again, unchanged, as often as the window allows. Each nonce is
claimed once and remembered for as long as its signature could still be accepted.

- ``MemoryNonceStore``: a dict of expiry times on the monotonic clock, swept as it is used and
  bounded by ``max_entries``. When full of live nonces it refuses to answer (``StoreUnavailable``)
  rather than forget one, since forgetting a nonce inside its window re-opens the replay.
- ``RedisNonceStore``: one ``SET key 1 NX PX ttl`` per claim, atomic in Redis, so a request replayed
  to another instance finds its nonce taken. Keys carry the shared state's prefix.
- ``FailoverNonceStore``: Redis first; when it is down, the shared-state ``on_failure`` rule:
  ``closed`` refuses (``StoreUnavailable``: the route answers 503), ``open`` falls back to this
  instance's memory (a replay to another instance is then possible during the outage, which is
  what ``open`` means). It shares the ``Outage`` of the other shared stores, so a dead Redis costs
  one failed call per backoff and ``/readyz`` reports one state.

redis-py errors become ``StoreUnavailable`` here and nowhere else in this module's callers.
"""

from __future__ import annotations

import heapq
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from portcullis.clock import Clock
from portcullis.errors import StoreUnavailable
from portcullis.stores.failover import Outage

__all__ = ["FailoverNonceStore", "MemoryNonceStore", "RedisNonceStore"]


class MemoryNonceStore:
    """Nonces of one process, remembered until their expiry on ``clock``."""

    def __init__(self, clock: Clock, *, max_entries: int = 200_000) -> None:
        self._clock = clock
        self._max = max_entries
        self._until: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []  # a heap: the next nonce to forget first

    async def claim(self, key: str, ttl_s: float) -> bool:
        now = self._clock.monotonic()
        self._sweep(now)
        until = self._until.get(key)
        if until is not None and until > now:
            return False
        if len(self._until) >= self._max:
            raise StoreUnavailable("nonce memory full")
        expires = now + max(ttl_s, 0.001)
        self._until[key] = expires
        heapq.heappush(self._expiry, (expires, key))
        return True

    def _sweep(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            expires, key = heapq.heappop(self._expiry)
            if self._until.get(key) == expires:
                del self._until[key]


class RedisNonceStore:
    """Nonces every instance sees: ``SET NX PX`` on the shared-state client."""

    def __init__(self, client: Redis, *, key_prefix: str) -> None:
        self._client = client
        self._prefix = key_prefix + "nonce:"

    async def claim(self, key: str, ttl_s: float) -> bool:
        try:
            created = await self._client.set(self._prefix + key, b"1", nx=True, px=max(1, int(ttl_s * 1000)))
        except (RedisError, OSError) as exc:  # OSError includes TimeoutError
            raise StoreUnavailable(f"redis: {type(exc).__name__}") from exc
        return bool(created)


class FailoverNonceStore:
    """``RedisNonceStore`` with the shared state's outage rule (see the module docstring)."""

    def __init__(self, shared: RedisNonceStore, local: MemoryNonceStore, outage: Outage, *,
                 on_failure: Literal["open", "closed"]) -> None:
        self._shared = shared
        self._local = local
        self._outage = outage
        self._on_failure = on_failure

    async def claim(self, key: str, ttl_s: float) -> bool:
        if self._outage.should_try():
            try:
                claimed = await self._shared.claim(key, ttl_s)
            except StoreUnavailable as exc:
                self._outage.failed(exc)
            else:
                self._outage.recovered()
                return claimed
        if self._on_failure == "closed":
            raise StoreUnavailable("shared state unavailable: nonces cannot be checked")
        return await self._local.claim(key, ttl_s)
