"""No audit record is lost or duplicated when a sink fails, falls behind, or the process restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from portcullis.audit.record import AuditRecord
from portcullis.audit.writer import AuditWriter
from portcullis.testing import CapturingAuditSink, ManualClock


def record(clock: ManualClock, n: int) -> AuditRecord:
    clock.advance(0.001)
    return AuditRecord.create(
        clock=clock, request_id=f"req-{n}", client_ip="192.0.2.1", consumer_id=None, key_id=None, method="GET",
        route="r", path=f"/items/{n}", query=None, status=200, decision="allowed", latency_ms=1.0, bytes_in=0,
        bytes_out=10, upstream_status=200, user_agent=None,
    )


def writer(tmp_path: Path, sinks: list[CapturingAuditSink], clock: ManualClock, **kw: Any) -> AuditWriter:
    return AuditWriter(sinks, spill_path=tmp_path / "spill.jsonl", clock=clock, batch_size=kw.pop("batch_size", 10),
                       flush_interval_s=60, **kw)


async def test_every_submitted_record_reaches_every_sink_once_in_order(tmp_path: Path) -> None:
    clock, a, b = ManualClock(), CapturingAuditSink(), CapturingAuditSink()
    w = writer(tmp_path, [a, b], clock)
    await w.start()
    records = [record(clock, i) for i in range(95)]
    for r in records:
        w.submit(r)
    await w.aclose()
    assert a.ids == b.ids == [r.id for r in records]


async def test_a_failing_sink_gets_its_records_later_in_order_and_the_other_is_unaffected(tmp_path: Path) -> None:
    clock, flaky, healthy = ManualClock(), CapturingAuditSink(failing=True), CapturingAuditSink()
    w = writer(tmp_path, [flaky, healthy], clock)
    await w.start()
    records = [record(clock, i) for i in range(50)]
    for r in records[:30]:
        w.submit(r)
    await w.flush()
    assert healthy.ids == [r.id for r in records[:30]]
    assert flaky.ids == []
    assert w.stats.waiting == 30  # the flaky sink's records wait in its spill file, not in memory
    flaky.failing = False
    for r in records[30:]:
        w.submit(r)
    clock.advance(1.0)  # the first retry is due
    await w.flush()
    assert flaky.ids == [r.id for r in records]
    assert healthy.ids == [r.id for r in records]
    assert w.stats.waiting == 0
    assert not await asyncio.to_thread((tmp_path / "spill.jsonl.0").exists)
    await w.aclose()


async def test_records_spilled_before_a_restart_are_replayed_by_the_next_writer(tmp_path: Path) -> None:
    clock = ManualClock()
    first = writer(tmp_path, [CapturingAuditSink(failing=True)], clock)
    await first.start()
    records = [record(clock, i) for i in range(25)]
    for r in records:
        first.submit(r)
    await first.aclose()
    recovered = CapturingAuditSink()
    second = writer(tmp_path, [recovered], clock)
    await second.start()
    await second.aclose()
    assert recovered.ids == [r.id for r in records]


async def test_a_large_spill_is_replayed_in_bounded_chunks_in_order(tmp_path: Path) -> None:
    clock = ManualClock()
    first = writer(tmp_path, [CapturingAuditSink(failing=True)], clock)
    await first.start()
    records = [record(clock, i) for i in range(300)]
    for r in records:
        first.submit(r)
    await first.aclose()
    sink = CapturingAuditSink()
    second = writer(tmp_path, [sink], clock, replay_chunk_bytes=4096)  # about ten records per chunk
    await second.start()
    await second.aclose()
    assert sink.ids == [r.id for r in records]
    assert len(sink.batch_sizes) > 20
    assert max(sink.batch_sizes) <= 4096 // 300  # no chunk is more than 4 KiB of records


async def test_a_restart_resumes_replay_where_the_last_process_stopped(tmp_path: Path) -> None:
    clock = ManualClock()
    first = writer(tmp_path, [CapturingAuditSink(failing=True)], clock)
    await first.start()
    records = [record(clock, i) for i in range(100)]
    for r in records:
        first.submit(r)
    await first.aclose()
    partial = CapturingAuditSink()
    second = writer(tmp_path, [partial], clock, replay_chunk_bytes=4096)
    await second.start()
    await partial_idle(second)
    partial.failing = True  # the sink fails after it took some chunks
    await second.aclose()
    rest = CapturingAuditSink()
    third = writer(tmp_path, [rest], clock)
    await third.start()
    await third.aclose()
    assert 0 < len(partial.ids) < len(records)
    assert partial.ids + rest.ids == [r.id for r in records]  # nothing twice, nothing missing


async def partial_idle(w: AuditWriter) -> None:
    """Let the replay started by ``start`` run for a few chunks (a yield, not a timer)."""
    while w.stats.replayed < 30:
        await asyncio.sleep(0)


async def test_submit_after_close_is_kept_for_the_next_writer(tmp_path: Path) -> None:
    clock, sink = ManualClock(), CapturingAuditSink()
    w = writer(tmp_path, [sink], clock)
    await w.start()
    await w.aclose()
    late = record(clock, 1)
    w.submit(late)  # never raises; schedules its own hand-over to the spill file
    while w.stats.waiting == 0:
        await asyncio.sleep(0)
    assert sink.ids == []
    nxt = CapturingAuditSink()
    w2 = writer(tmp_path, [nxt], clock)
    await w2.start()
    await w2.aclose()
    assert nxt.ids == [late.id]
