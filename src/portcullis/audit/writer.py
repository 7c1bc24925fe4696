"""The audit writer: records queued on the request path, written in batches off it, never lost.

Why this shape: the request path must not wait for a disk or a database, and an audit trail with
holes is worse than none. ``submit`` only appends to a deque. A background task writes batches to
every sink; a sink that fails gets the batch appended to its own spill file, and before that sink
is given anything new, its spill file is replayed in order. Sinks are idempotent by record id, so a
replay after a crash cannot duplicate rows in the store.

Timing: the flush task wakes when a batch is full or after ``flush_interval_s`` of real time. This
is an operational timer, not a decision, so it uses the event loop's time rather than the injected
clock (a manual clock would make the task spin); tests call ``flush()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from portcullis.audit.record import AuditRecord
from portcullis.clock import Clock
from portcullis.stores.base import AuditSink

__all__ = ["AuditStats", "AuditWriter"]

log = logging.getLogger("portcullis.audit")


@dataclass(slots=True)
class AuditStats:
    submitted: int = 0
    written: int = 0
    spilled: int = 0
    replayed: int = 0
    failures: int = 0


class AuditWriter:
    def __init__(
        self,
        sinks: Sequence[AuditSink],
        *,
        spill_path: str | Path,
        clock: Clock,
        batch_size: int = 256,
        flush_interval_s: float = 1.0,
        queue_max: int = 100_000,
    ) -> None:
        self._sinks = tuple(sinks)
        self._spill = [Path(f"{spill_path}.{i}") for i in range(len(self._sinks))]
        self._clock = clock
        self._batch = batch_size
        self._interval = flush_interval_s
        self._queue_max = queue_max
        self._queue: deque[AuditRecord] = deque()
        self._overflow: list[AuditRecord] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._late: asyncio.Task[None] | None = None
        self._waiting = [0] * len(self._sinks)  # records in each sink's spill file
        self.stats = AuditStats()

    @property
    def enabled(self) -> bool:
        """False when no sink is configured: callers then skip building records at all."""
        return bool(self._sinks)

    def submit(self, record: AuditRecord) -> None:
        """Queue a record. Never blocks, never raises."""
        self.stats.submitted += 1
        if self._closed or len(self._queue) >= self._queue_max:
            self._overflow.append(record)  # written to every sink's spill file by the next flush
            self._wake.set()
            if self._closed and self._late is None:
                # No flush task runs after close: schedule one so a late record reaches a spill file.
                self._late = asyncio.get_running_loop().create_task(self.flush())
                self._late.add_done_callback(self._late_done)
            return
        self._queue.append(record)
        if len(self._queue) >= self._batch:
            self._wake.set()

    def _late_done(self, task: asyncio.Task[None]) -> None:
        self._late = None
        if not task.cancelled() and task.exception() is not None:
            log.error("late audit flush failed", exc_info=task.exception())

    @property
    def waiting(self) -> int:
        """Records waiting in spill files for a sink to come back (the ``audit_spilled`` gauge)."""
        return sum(self._waiting)

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._overflow)

    async def start(self) -> None:
        """Replay what a previous process left in spill files, then start the flush task."""
        await self.flush()
        self._task = asyncio.create_task(self._run(), name="portcullis-audit-writer")

    async def _run(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # a bug here must not stop auditing; the records stay queued
                log.exception("audit flush failed")

    async def flush(self) -> None:
        """Write everything queued now (and replay spills) before returning."""
        async with self._lock:
            if self._overflow:
                overflow, self._overflow = self._overflow, []
                rows = [r.to_dict() for r in overflow]
                for index in range(len(self._sinks)):
                    await self._append_spill(index, rows)
            while True:
                await self._replay_spills()
                if not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
                rows = [r.to_dict() for r in batch]
                for index, sink in enumerate(self._sinks):
                    if await self._has_spill(index):
                        await self._append_spill(index, rows)  # keep order: behind what is waiting
                        continue
                    try:
                        await sink.write(rows)
                        self.stats.written += len(rows)
                    except Exception as exc:
                        self.stats.failures += 1
                        log.warning("audit sink %d failed (%r); %d records spilled", index, exc, len(rows))
                        await self._append_spill(index, rows)

    async def _replay_spills(self) -> None:
        for index, sink in enumerate(self._sinks):
            path = self._spill[index]
            if not await self._has_spill(index):
                continue
            rows = await asyncio.to_thread(_read_spill, path)
            self._waiting[index] = len(rows)  # exact, also for files a previous process left
            try:
                for start in range(0, len(rows), self._batch):
                    await sink.write(rows[start:start + self._batch])
            except Exception as exc:
                self.stats.failures += 1
                log.warning("audit sink %d still failing (%r); %d records wait in %s", index, exc, len(rows), path)
                continue
            await asyncio.to_thread(path.unlink, True)
            self._waiting[index] = 0
            self.stats.replayed += len(rows)
            self.stats.written += len(rows)

    async def _has_spill(self, index: int) -> bool:
        return await asyncio.to_thread(self._spill[index].exists)

    async def _append_spill(self, index: int, rows: list[dict[str, Any]]) -> None:
        data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
        await asyncio.to_thread(_append_bytes, self._spill[index], data)
        self._waiting[index] += len(rows)
        self.stats.spilled += len(rows)

    async def aclose(self) -> None:
        """Stop taking the fast path, write everything, close the sinks."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.flush()
        for sink in self._sinks:
            with contextlib.suppress(Exception):
                await sink.aclose()


def _append_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _read_spill(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            log.error("skipping a torn line in %s", path)
    return rows
