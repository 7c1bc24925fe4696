"""No audit record is lost or duplicated when a sink fails, overflows, or the process restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from portcullis.audit.record import AuditRecord
from portcullis.audit.writer import AuditWriter
from portcullis.testing import ManualClock


class ListSink:
    """A real AuditSink that keeps rows in memory and can be told to fail its next writes."""

    def __init__(self, fail_next: int = 0, *, always_fail: bool = False) -> None:
        self.rows: list[Mapping[str, Any]] = []
        self.fail_next = fail_next
        self.always_fail = always_fail

    async def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        if self.always_fail or self.fail_next > 0:
            self.fail_next -= 1
            raise OSError("disk full")
        seen = {r["id"] for r in self.rows}
        self.rows.extend(r for r in records if r["id"] not in seen)

    async def aclose(self) -> None:
        return None

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.rows]


def record(clock: ManualClock, n: int) -> AuditRecord:
    clock.advance(0.001)
    return AuditRecord.create(
        clock=clock, request_id=f"req-{n}", client_ip="192.0.2.1", consumer_id=None, key_id=None, method="GET",
        route="r", path=f"/items/{n}", query=None, status=200, decision="allowed", latency_ms=1.0, bytes_in=0,
        bytes_out=10, upstream_status=200, user_agent=None,
    )


def writer(tmp_path: Path, sinks: list[ListSink], clock: ManualClock, **kw: Any) -> AuditWriter:
    return AuditWriter(sinks, spill_path=tmp_path / "spill.jsonl", clock=clock, batch_size=kw.pop("batch_size", 10),
                       flush_interval_s=60, **kw)


async def test_every_submitted_record_reaches_every_sink_once_in_order(tmp_path: Path) -> None:
    clock, a, b = ManualClock(), ListSink(), ListSink()
    w = writer(tmp_path, [a, b], clock)
    await w.start()
    records = [record(clock, i) for i in range(95)]
    for r in records:
        w.submit(r)
    await w.aclose()
    assert a.ids == b.ids == [r.id for r in records]


async def test_a_failing_sink_gets_its_records_later_in_order_and_the_other_is_unaffected(tmp_path: Path) -> None:
    clock, flaky, healthy = ManualClock(), ListSink(fail_next=4), ListSink()
    w = writer(tmp_path, [flaky, healthy], clock)
    await w.start()
    records = [record(clock, i) for i in range(50)]
    for r in records[:30]:
        w.submit(r)
    await w.flush()
    assert healthy.ids == [r.id for r in records[:30]]
    assert flaky.ids == []  # three batches and a replay attempt failed: all 30 wait in its spill file
    assert w.stats.spilled == 30
    for r in records[30:]:
        w.submit(r)
    await w.aclose()
    assert flaky.ids == [r.id for r in records]
    assert healthy.ids == [r.id for r in records]
    assert not await asyncio.to_thread((tmp_path / "spill.jsonl.0").exists)


async def test_records_spilled_before_a_restart_are_replayed_by_the_next_writer(tmp_path: Path) -> None:
    clock = ManualClock()
    first = writer(tmp_path, [ListSink(always_fail=True)], clock)
    await first.start()
    records = [record(clock, i) for i in range(25)]
    for r in records:
        first.submit(r)
    await first.aclose()
    recovered = ListSink()
    second = writer(tmp_path, [recovered], clock)
    await second.start()
    await second.aclose()
    assert recovered.ids == [r.id for r in records]


async def test_queue_overflow_spills_instead_of_dropping(tmp_path: Path) -> None:
    clock, sink = ManualClock(), ListSink()
    w = writer(tmp_path, [sink], clock, queue_max=10, batch_size=1000)
    await w.start()
    records = [record(clock, i) for i in range(100)]
    for r in records:
        w.submit(r)
    await w.aclose()
    assert sorted(sink.ids) == sorted(r.id for r in records)
    assert len(sink.ids) == 100


async def test_submit_after_close_is_kept_for_the_next_writer(tmp_path: Path) -> None:
    clock, sink = ManualClock(), ListSink()
    w = writer(tmp_path, [sink], clock)
    await w.start()
    await w.aclose()
    sink.always_fail = True  # the sinks are closed now
    late = record(clock, 1)
    w.submit(late)  # never raises; schedules its own flush to the spill file
    while w.pending:
        await asyncio.sleep(0)
    await w.flush()  # waits on the writer's lock until the scheduled flush has finished
    assert sink.ids == []
    nxt = ListSink()
    w2 = writer(tmp_path, [nxt], clock)
    await w2.start()
    await w2.aclose()
    assert nxt.ids == [late.id]
