"""Public test kit: fakes for time (``ManualClock``, ``ManualTimer``) and the pieces tests of Portcullis need.

Only time, DNS and chance are faked in Portcullis tests; everything else is real, such as the
``RecordingUpstream`` backend that records request heads as they arrive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from portcullis.stores.base import ApiKeyRecord, AuditBatch, KeyPage, KeyStore
from portcullis.testing.loopback import catch_all, serve_app
from portcullis.testing.upstream import RecordedHead, RecordingUpstream

__all__ = [
    "CapturingAuditSink", "CountingKeyStore", "ManualClock", "ManualTimer", "RecordedHead", "RecordingUpstream",
    "catch_all", "serve_app", "until",
]


class ManualClock:
    """A clock that moves only when told to. ``sleep`` advances it instead of waiting."""

    __slots__ = ("_monotonic", "_wall")

    def __init__(self, *, wall: float = 1_700_000_000.0, monotonic: float = 1000.0) -> None:
        self._wall = wall
        self._monotonic = monotonic

    def monotonic(self) -> float:
        return self._monotonic

    def wall(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._wall += seconds
        self._monotonic += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))


class _TimerHandle:
    __slots__ = ("callback", "cancelled", "due")

    def __init__(self, due: float, callback: Callable[[], None]) -> None:
        self.due = due
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualTimer:
    """A timer (``egress.bulkhead.Timer``) whose callbacks run only when ``advance`` moves its
    ``ManualClock`` past their due time, in due order: queue timeouts without waiting."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self._handles: list[_TimerHandle] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> _TimerHandle:
        handle = _TimerHandle(self.clock.monotonic() + delay, callback)
        self._handles.append(handle)
        return handle

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        now = self.clock.monotonic()
        due = sorted((h for h in self._handles if h.due <= now and not h.cancelled), key=lambda h: h.due)
        self._handles = [h for h in self._handles if h.due > now and not h.cancelled]
        for handle in due:
            handle.callback()


async def until(condition: Callable[[], bool], *, turns: int = 100_000) -> None:
    """Let the event loop run (a gateway, its provider and the test sharing it) until ``condition``
    holds; no time passes, nothing sleeps. Fails after ``turns`` loop turns."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


class CapturingAuditSink:
    """A real ``AuditSink`` that keeps what it is given in memory, idempotent by record id like the stores.

    It can be told to fail (``fail_next`` writes, or every write while ``failing``) and to hold each
    write until ``release()`` (a sink slower than arrivals, without timers). ``batch_sizes`` and
    ``attempts`` show how the writer called it.
    """

    def __init__(self, *, fail_next: int = 0, failing: bool = False, gated: bool = False) -> None:
        self.rows: list[Mapping[str, Any]] = []
        self.batch_sizes: list[int] = []
        self.attempts = 0
        self.fail_next = fail_next
        self.failing = failing
        self._gate = asyncio.Event()
        if not gated:
            self._gate.set()
        self.entered = asyncio.Event()  # set when a write is waiting at the gate

    def release(self) -> None:
        self._gate.set()

    async def write(self, batch: AuditBatch) -> None:
        self.attempts += 1
        self.entered.set()
        await self._gate.wait()
        if self.failing or self.fail_next > 0:
            self.fail_next -= 1
            raise OSError("disk full")
        self.batch_sizes.append(len(batch))
        seen = {r["id"] for r in self.rows}
        self.rows.extend(r for r in batch.rows if r["id"] not in seen)

    async def aclose(self) -> None:
        return None

    @property
    def ids(self) -> list[str]:
        return [str(r["id"]) for r in self.rows]


class CountingKeyStore:
    """A real ``KeyStore`` (``inner``) that counts ``get`` and ``touch`` calls, so a test can assert
    how often a key was looked up (cache hits, floods of unknown ids); ``gate`` can hold ``get``."""

    def __init__(self, inner: KeyStore) -> None:
        self.inner = inner
        self.gets = 0
        self.touches = 0
        self.gate: asyncio.Event | None = None

    async def create(self, record: ApiKeyRecord) -> None:
        await self.inner.create(record)

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        self.gets += 1
        record = await self.inner.get(key_id)
        if self.gate is not None:
            await self.gate.wait()
        return record

    async def list(self, consumer_id: str | None = None) -> list[ApiKeyRecord]:
        return await self.inner.list(consumer_id)

    async def page(self, *, consumer_id: str | None = None, consumer_prefix: str | None = None,
                   after: str | None = None, limit: int = 100) -> KeyPage:
        return await self.inner.page(consumer_id=consumer_id, consumer_prefix=consumer_prefix, after=after,
                                     limit=limit)

    async def revoke(self, key_id: str, at: float) -> bool:
        return await self.inner.revoke(key_id, at)

    async def set_disabled(self, key_id: str, disabled: bool) -> bool:
        return await self.inner.set_disabled(key_id, disabled)

    async def rotate(self, key_id: str, secret_hash: str, previous_valid_until: float) -> bool:
        return await self.inner.rotate(key_id, secret_hash, previous_valid_until)

    async def touch(self, key_id: str, at: float) -> None:
        self.touches += 1
        await self.inner.touch(key_id, at)

    async def ping(self) -> None:
        await self.inner.ping()

    async def aclose(self) -> None:
        await self.inner.aclose()
