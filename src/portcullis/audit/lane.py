"""One sink's delivery: its records in order, from memory while it keeps up, from its spill file when not.

Why a lane per sink: a slow or broken sink must neither hold up the other sinks nor make the
gateway hold its records in memory. The writer offers every batch to every lane. A lane takes a
batch into memory only while it is up, nothing of its own waits on disk, and its in-memory backlog
stays under ``backlog_max`` records; otherwise the batch goes to the end of its spill file. Its pump
task writes the backlog first, then replays the spill in chunks, so the sink sees records in the
order they were submitted. A write that fails puts that batch (and the backlog behind it) in front
of the spill file, so order holds across outages too.

Why backoff: while a sink is down, each attempt costs a connect timeout and a chunk read; retried
on every flush it dragged the gateway down by three quarters during a PostgreSQL outage. After a
failure the next attempt waits ``1 s``, doubling to at most ``30 s``, measured on the injected
``Clock``; the writer kicks lanes on its own timer and a pump that is not due returns at once.
A lane logs only state changes: down (with the error), back, caught up (with the records replayed),
spill file failing (with the records lost) and writable again.

What it refuses to do: drop a record without counting it. A record that can reach neither the
sink nor the spill file is reported through ``on_lost``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from portcullis.audit.spill import SpillChunk, SpillFile
from portcullis.clock import Clock
from portcullis.stores.base import AuditBatch, AuditSink

__all__ = ["BACKOFF_MAX_S", "BACKOFF_MIN_S", "LaneCounts", "SinkLane"]

log = logging.getLogger("portcullis.audit")

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 30.0

LostHook = Callable[[str, str, int], None]  # (sink name, reason, records)


@dataclass(slots=True)
class LaneCounts:
    """What one lane did, for stats and tests: records written, spilled, replayed from the spill, lost."""

    written: int = 0
    spilled: int = 0
    replayed: int = 0
    lost: int = 0
    failures: int = 0


class SinkLane:
    """Delivery to one sink; see the module docstring."""

    def __init__(
        self, name: str, sink: AuditSink, spill: SpillFile, *, clock: Clock, backlog_max: int, on_lost: LostHook,
    ) -> None:
        self.name = name
        self.sink = sink
        self.spill = spill
        self.counts = LaneCounts()
        self._clock = clock
        self._backlog: deque[AuditBatch] = deque()
        self._backlog_records = 0
        self._backlog_max = backlog_max
        self._on_lost = on_lost
        self._down = False
        self._delay = 0.0
        self._retry_at = 0.0
        self._recovering = False  # from down until the spill file is drained
        self._replayed_since_down = 0
        self._spill_broken = False
        self._lost_since_broken = 0
        self._pump: asyncio.Task[None] | None = None
        self.closed = False

    @property
    def down(self) -> bool:
        return self._down

    def _taking_into_memory(self, records: int) -> bool:
        return (
            not self.closed
            and (not self._down or self._clock.monotonic() >= self._retry_at)
            and self.spill.waiting == 0
            and not self.spill.lock.locked()
            and self._backlog_records + records <= self._backlog_max
        )

    async def offer(self, batch: AuditBatch) -> None:
        """Take ``batch`` into memory, or append it to the spill file (or count it lost). Never raises."""
        if not len(batch):
            return
        if self._taking_into_memory(len(batch)):
            self._backlog.append(batch)
            self._backlog_records += len(batch)
            self.kick()
            return
        try:
            await self.spill.append(batch.lines)
        except OSError as exc:
            self._lose(len(batch), exc)
            return
        self.counts.spilled += len(batch)
        self._spill_works()

    def kick(self, *, force: bool = False) -> None:
        """Start the pump unless it runs; ``force`` ignores the backoff (a last attempt at shutdown)."""
        if self.closed:
            return
        if force:
            self._retry_at = 0.0
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run_pump(), name=f"portcullis-audit-{self.name}")

    async def idle(self) -> None:
        """Wait until the pump has done what it can now."""
        while self._pump is not None and not self._pump.done():
            await asyncio.shield(self._pump)

    async def _run_pump(self) -> None:
        try:
            await self._pump_once()
        except Exception:  # a bug here must not stop auditing; what waits stays where it is
            log.exception("audit lane %s failed", self.name)

    async def _pump_once(self) -> None:
        while True:
            if self._down and self._clock.monotonic() < self._retry_at:
                return
            if self._backlog:
                batch = self._take_backlog()
                if not await self._write(batch):
                    await self._put_back(batch)
                    return
                continue
            try:
                chunk = await self.spill.read_chunk()
            except OSError as exc:
                self._failed(exc, f"cannot read {self.spill.path}")
                return
            if chunk is None:
                if self._down:  # nothing waits to prove the sink is back: the next batch will
                    self._retry_at = 0.0
                return
            if not await self._replay(chunk):
                return

    async def _replay(self, chunk: SpillChunk) -> bool:
        if chunk.torn:
            self._report_lost("spill_torn", chunk.torn)
        if len(chunk.batch) and not await self._write(chunk.batch):
            return False
        self.counts.replayed += len(chunk.batch)
        if self._recovering:
            self._replayed_since_down += len(chunk.batch)
        try:
            await self.spill.consumed(chunk)
        except OSError as exc:  # the records were written; only the offset could not be saved
            log.warning("audit spill offset for sink %s not saved (%r); a restart may replay them", self.name, exc)
        self._maybe_caught_up()
        return True

    def _maybe_caught_up(self) -> None:
        if self._recovering and not self._down and self.spill.waiting == 0:
            self._recovering = False
            log.warning("audit sink %s caught up: %d records replayed from %s", self.name,
                        self._replayed_since_down, self.spill.path)
            self._replayed_since_down = 0

    def _take_backlog(self) -> AuditBatch:
        if len(self._backlog) == 1:
            batch = self._backlog.popleft()
        else:
            rows: list[Mapping[str, Any]] = []
            lines: list[bytes] = []
            while self._backlog:
                part = self._backlog.popleft()
                rows.extend(part.rows)
                lines.extend(part.lines)
            batch = AuditBatch(rows, lines)
        self._backlog_records = 0
        return batch

    async def _write(self, batch: AuditBatch) -> bool:
        try:
            await self.sink.write(batch)
        except Exception as exc:  # any sink failure: the records wait in the spill file
            self._failed(exc, "write failed")
            return False
        self.counts.written += len(batch)
        if self._down:
            self._down = False
            log.warning("audit sink %s is back; %d records wait in %s", self.name, self.spill.waiting,
                        self.spill.path)
        self._delay = 0.0
        self._maybe_caught_up()
        return True

    def _failed(self, exc: BaseException, what: str) -> None:
        self.counts.failures += 1
        self._delay = min(BACKOFF_MAX_S, self._delay * 2) if self._delay else BACKOFF_MIN_S
        self._retry_at = self._clock.monotonic() + self._delay
        if not self._down:
            self._down = True
            self._recovering = True
            log.warning("audit sink %s is down (%s: %r); records wait in %s, retried with backoff up to %.0fs",
                        self.name, what, exc, self.spill.path, BACKOFF_MAX_S)

    async def _put_back(self, batch: AuditBatch) -> None:
        """A batch from memory failed: it and the backlog behind it go in front of the spill file."""
        rest = self._take_backlog() if self._backlog else None
        lines = [*batch.lines, *(rest.lines if rest else ())]
        try:
            await self.spill.prepend(lines)
        except OSError as exc:
            self._lose(len(lines), exc)
            return
        self.counts.spilled += len(lines)
        self._spill_works()

    def _lose(self, records: int, exc: OSError) -> None:
        self._report_lost("spill_failed", records)
        self._lost_since_broken += records
        if not self._spill_broken:
            self._spill_broken = True
            log.error("audit spill file %s cannot be written (%r): %d records for sink %s lost, more will be",
                      self.spill.path, exc, records, self.name)

    def _report_lost(self, reason: str, records: int) -> None:
        self.counts.lost += records
        self._on_lost(self.name, reason, records)

    def _spill_works(self) -> None:
        if self._spill_broken:
            self._spill_broken = False
            log.error("audit spill file %s is writable again; %d records for sink %s were lost", self.spill.path,
                      self._lost_since_broken, self.name)
            self._lost_since_broken = 0
