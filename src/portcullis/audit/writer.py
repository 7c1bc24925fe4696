"""The audit writer: records queued on the request path, written in batches off it, with bounded memory.

Why this shape: the request path must not wait for a disk or a database, an audit trail with holes
is worse than none, and a gateway whose memory grows with a slow sink falls over (a soak at 7,300
requests/s grew 3.6 MiB/s while SQLite took 2,000 records/s). So:

- ``submit`` appends to a queue bounded by ``queue_max`` and wakes the writer once a batch is
  ready. It never blocks and never raises. A record that finds the queue full is counted lost
  (``on_lost``, reason ``queue_full``) and logged once per full/has-room change: the queue is only
  full when the writer task itself cannot run, since it moves records on at disk speed. ``full``
  lets the ingress shed requests before serving them (``audit.when_full: shed``, the default), so
  that such a record belongs to a request that was refused, never to one that was served.
- The writer task takes what is queued (at most ``8 * batch_size`` records at a time), serialises
  it once in a worker thread (``AuditBatch``) and offers it to one ``SinkLane`` per sink. A lane
  that keeps up takes the batch into memory (at most ``8 * batch_size`` records waiting, and as
  many being written); a lane that is behind or down appends it to its own spill file, replayed
  in order, in bounded chunks, once the sink takes records again. Memory therefore holds at most
  ``queue_max`` queued records plus ``16 * batch_size`` per sink; the rest is on disk.
- Loss is counted, never silent: a record that can reach neither its sink nor its spill file is
  reported through ``on_lost`` (reason ``spill_failed``) and logged once per state change.

Chain: with a ``Chainer`` (the gateway always passes one), each batch is sealed into its hash
chains in the same worker-thread call that serialises it, so every sink and spill file receives the
same sealed lines and checkpoints in the same order (``audit.chain`` says why and how). Checkpoints
that fall due while no records arrive are written on the writer's own timer, and ``aclose`` writes
a final one per chain.

Sinks are idempotent by record id, so a replay after a crash cannot duplicate rows in the stores.

Timing: the writer wakes when a batch is full or after ``flush_interval_s`` of real time. This is
an operational timer, not a decision, so it uses the event loop's time (a manual clock would make
the task spin); tests call ``flush()``. Whether a lane's retry is due is a decision and reads the
injected ``Clock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from portcullis.audit.chain import Chainer
from portcullis.audit.lane import LostHook, SinkLane
from portcullis.audit.record import AuditRecord
from portcullis.audit.spill import SpillFile
from portcullis.clock import Clock
from portcullis.stores.base import AuditBatch, AuditSink

__all__ = ["AuditStats", "AuditWriter"]

log = logging.getLogger("portcullis.audit")

_BATCHES_IN_HAND = 8


@dataclass(frozen=True, slots=True)
class AuditStats:
    """A snapshot of what the writer did, summed over sinks (a record written to two sinks counts twice)."""

    submitted: int
    queued: int
    written: int
    spilled: int
    replayed: int
    waiting: int
    lost: int
    failures: int


def _ignore_loss(sink: str, reason: str, records: int) -> None:
    return None


class AuditWriter:
    """Queue on the request path, lanes and spill files off it; see the module docstring."""

    def __init__(
        self,
        sinks: Sequence[AuditSink] | Mapping[str, AuditSink],
        *,
        spill_path: str | Path,
        clock: Clock,
        batch_size: int = 256,
        flush_interval_s: float = 1.0,
        queue_max: int = 100_000,
        replay_chunk_bytes: int = 1 << 20,
        on_lost: LostHook = _ignore_loss,
        chainer: Chainer | None = None,
    ) -> None:
        named = dict(sinks) if isinstance(sinks, Mapping) else {str(i): s for i, s in enumerate(sinks)}
        self._batch = batch_size
        self._batch_max = batch_size * _BATCHES_IN_HAND
        self._lanes = tuple(
            SinkLane(name, sink, SpillFile(Path(f"{spill_path}.{i}"), chunk_bytes=replay_chunk_bytes), clock=clock,
                     backlog_max=self._batch_max, on_lost=on_lost)
            for i, (name, sink) in enumerate(named.items())
        )
        self._interval = flush_interval_s
        self._chainer = chainer
        self._queue_max = queue_max
        self._queue: deque[AuditRecord] = deque()
        self._on_lost = on_lost
        self._full = False
        self._lost_while_full = 0
        self._submitted = 0
        self._queue_lost = 0
        self._wake = asyncio.Event()
        self._dispatching = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._late: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        """False when no sink is configured: callers then skip building records at all."""
        return bool(self._lanes)

    @property
    def stats(self) -> AuditStats:
        counts = [lane.counts for lane in self._lanes]
        return AuditStats(
            submitted=self._submitted, queued=len(self._queue), written=sum(c.written for c in counts),
            spilled=sum(c.spilled for c in counts), replayed=sum(c.replayed for c in counts), waiting=self.waiting,
            lost=self._queue_lost * len(self._lanes) + sum(c.lost for c in counts),
            failures=sum(c.failures for c in counts),
        )

    @property
    def waiting(self) -> int:
        """Records waiting in spill files for their sink (the ``portcullis_audit_spilled_records`` gauge)."""
        return sum(lane.spill.waiting for lane in self._lanes)

    @property
    def full(self) -> bool:
        """True while a new record would find the queue full (the ingress sheds requests then)."""
        return len(self._queue) >= self._queue_max

    @property
    def pending(self) -> int:
        """Records queued in memory, not yet handed to the lanes."""
        return len(self._queue)

    def submit(self, record: AuditRecord) -> None:
        """Queue a record. Never blocks, never raises."""
        self._submitted += 1
        if len(self._queue) >= self._queue_max:
            self._queue_lost += 1
            self._lost_while_full += 1
            for lane in self._lanes:
                self._on_lost(lane.name, "queue_full", 1)
            if not self._full:
                self._full = True
                log.error("audit queue full (%d records): new records are lost until the writer catches up",
                          self._queue_max)
            self._wake.set()
            return
        if self._full:
            self._full = False
            log.error("audit queue has room again; %d records were lost while it was full", self._lost_while_full)
            self._lost_while_full = 0
        self._queue.append(record)
        if self._closed:
            if self._late is None:
                # No writer task runs after close: schedule one so a late record reaches a spill file.
                self._late = asyncio.get_running_loop().create_task(self._dispatch())
                self._late.add_done_callback(self._late_done)
        elif len(self._queue) >= self._batch:
            self._wake.set()

    def _late_done(self, task: asyncio.Task[None]) -> None:
        self._late = None
        if not task.cancelled() and task.exception() is not None:
            log.error("late audit flush failed", exc_info=task.exception())

    async def start(self) -> None:
        """Take over what a previous process left in spill files, start replaying it, start the writer task."""
        for lane in self._lanes:
            try:
                await lane.spill.open()
            except OSError as exc:  # the gateway still starts; what cannot be spilled is counted lost
                log.error("audit spill file %s cannot be read (%r); starting without it", lane.spill.path, exc)
            lane.kick()
        self._task = asyncio.create_task(self._run(), name="portcullis-audit-writer")

    async def _run(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._dispatch()
                await self._seal_extra(due=True)
                for lane in self._lanes:
                    lane.kick()
            except Exception:  # a bug here must not stop auditing; the records stay queued
                log.exception("audit dispatch failed")

    async def _dispatch(self) -> None:
        """Move everything queued to the lanes (memory or spill files), in order."""
        async with self._dispatching:
            while self._queue:
                records = [self._queue.popleft() for _ in range(min(self._batch_max, len(self._queue)))]
                batch = await asyncio.to_thread(_encode, records, self._chainer)
                for lane in self._lanes:
                    await lane.offer(batch)

    async def _seal_extra(self, *, due: bool) -> None:
        """Checkpoints that are due without new records (``due``), or the final ones, to every lane."""
        chainer = self._chainer
        if chainer is None or not self._lanes:
            return
        async with self._dispatching:
            sealed = await asyncio.to_thread(chainer.due if due else chainer.close)
            if sealed.rows:
                batch = AuditBatch(sealed.rows, sealed.lines)
                for lane in self._lanes:
                    await lane.offer(batch)

    async def flush(self, *, force: bool = False) -> None:
        """Hand over everything queued now and wait until every lane has written what it can.

        A lane whose sink is down and not yet due for a retry keeps its records in its spill file;
        ``force`` retries it now regardless (a last attempt at shutdown). Checkpoints that are due
        go with them.
        """
        await self._dispatch()
        await self._seal_extra(due=True)
        for lane in self._lanes:
            lane.kick(force=force)
        for lane in self._lanes:
            await lane.idle()

    async def aclose(self) -> None:
        """Stop the writer task, write everything the sinks take (queue and spill files), close the sinks.

        What a sink still refuses stays in its spill file for the next process.
        """
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self._dispatch()
        await self._seal_extra(due=False)
        await self.flush(force=True)
        for lane in self._lanes:
            lane.closed = True
            with contextlib.suppress(Exception):
                await lane.sink.aclose()


def _encode(records: list[AuditRecord], chainer: Chainer | None) -> AuditBatch:
    if chainer is None:
        return AuditBatch.of([r.to_dict() for r in records])
    sealed = chainer.seal([r.to_dict() for r in records])
    return AuditBatch(sealed.rows, sealed.lines)
