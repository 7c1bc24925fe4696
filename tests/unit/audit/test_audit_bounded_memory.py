"""A sink that falls behind costs disk, not memory: the queue stays under ``queue_max`` and nothing is lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.unit.audit.test_audit_spill_replay import record, writer

from portcullis.audit.writer import AuditWriter
from portcullis.testing import CapturingAuditSink, ManualClock


async def handed_over(w: AuditWriter) -> None:
    """Yield to the writer task until the queue is empty (a yield, not a timer)."""
    while w.pending:
        await asyncio.sleep(0)


async def test_a_full_queue_spills_to_disk_instead_of_memory(tmp_path: Path) -> None:
    clock, slow = ManualClock(), CapturingAuditSink(gated=True)  # holds every write until released
    w = writer(tmp_path, [slow], clock, queue_max=10, batch_size=10)
    await w.start()
    records = [record(clock, i) for i in range(200)]
    most_queued = 0
    for start in range(0, 200, 10):
        for r in records[start:start + 10]:
            w.submit(r)
        most_queued = max(most_queued, w.pending)
        await handed_over(w)
    assert most_queued <= 10
    assert w.stats.lost == 0
    in_hand = 2 * 8 * 10  # the records a lane holds: eight batches being written, eight more next
    assert w.stats.waiting >= 200 - in_hand  # the rest of the backlog is on disk
    slow.release()
    await w.aclose()
    assert slow.ids == [r.id for r in records]  # in order, once each
    assert w.stats.waiting == 0


async def test_a_write_that_fails_behind_spilled_records_keeps_the_order(tmp_path: Path) -> None:
    clock, sink = ManualClock(), CapturingAuditSink(gated=True)
    w = writer(tmp_path, [sink], clock, batch_size=10)
    await w.start()
    records = [record(clock, i) for i in range(150)]
    for start in range(0, 150, 10):
        for r in records[start:start + 10]:
            w.submit(r)
        await handed_over(w)
    await sink.entered.wait()
    sink.failing = True
    sink.release()  # the batch in hand fails while newer records already wait on disk
    await w.flush()
    sink.failing = False
    clock.advance(1.0)
    await w.aclose()
    assert sink.ids == [r.id for r in records]


async def test_records_that_find_the_queue_full_are_counted_lost_not_held(tmp_path: Path) -> None:
    clock, sink = ManualClock(), CapturingAuditSink()
    lost: list[tuple[str, str, int]] = []
    w = writer(tmp_path, [sink], clock, queue_max=10, batch_size=1000,
               on_lost=lambda *event: lost.append(event))
    await w.start()
    for i in range(25):  # no yield: the writer task cannot run, so the queue cannot drain
        w.submit(record(clock, i))
    assert w.pending == 10
    assert w.stats.lost == 15
    assert sum(n for _, reason, n in lost if reason == "queue_full") == 15
    await w.aclose()
    assert len(sink.ids) == 10
