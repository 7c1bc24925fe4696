"""A sink that is down is retried with capped exponential backoff, logged once per state change, and
records that can reach neither the sink nor its spill file are counted where an operator sees them."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import pytest
from tests.unit.audit.test_audit_spill_replay import record

from portcullis.audit.writer import AuditWriter
from portcullis.observability.metrics import GatewayMetrics
from portcullis.testing import CapturingAuditSink, ManualClock


def lost_metric(metrics: GatewayMetrics, sink: str, reason: str) -> float:
    prefix = f'portcullis_audit_lost_records_total{{reason="{reason}",sink="{sink}"}} '
    lines = [li for li in metrics.render().decode().splitlines() if li.startswith(prefix)]
    return float(lines[0].split()[-1]) if lines else 0.0


async def test_records_lost_when_the_sink_and_its_spill_file_fail_are_counted_in_the_metric(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    await asyncio.to_thread(blocker.write_text, "")  # the spill file's directory is a file: ENOTDIR, for real
    clock, metrics = ManualClock(), GatewayMetrics()
    down, healthy = CapturingAuditSink(failing=True), CapturingAuditSink()
    w = AuditWriter({"store": down, "file": healthy}, spill_path=blocker / "spill.jsonl", clock=clock,
                    batch_size=10, flush_interval_s=60, on_lost=metrics.audit_records_lost)
    await w.start()
    records = [record(clock, i) for i in range(40)]
    with caplog.at_level(logging.WARNING, logger="portcullis.audit"):
        for start in range(0, 40, 10):
            for r in records[start:start + 10]:
                w.submit(r)
            await w.flush()
            clock.advance(60)  # every retry is due and fails again
    assert lost_metric(metrics, "store", "spill_failed") == 40
    assert lost_metric(metrics, "file", "spill_failed") == 0
    assert healthy.ids == [r.id for r in records]
    assert w.stats.waiting == 0  # portcullis_audit_spilled_records: nothing waits, it is gone
    spill_errors = [r for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(spill_errors) == 1  # one line per state change, not one per batch
    await w.aclose()


async def test_a_down_sink_is_retried_with_exponential_backoff_capped_at_30_seconds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock, sink = ManualClock(), CapturingAuditSink(failing=True)
    w = AuditWriter([sink], spill_path=tmp_path / "spill.jsonl", clock=clock, batch_size=10, flush_interval_s=60)
    await w.start()
    start = clock.monotonic()
    attempts_at: list[float] = []
    with caplog.at_level(logging.WARNING, logger="portcullis.audit"):
        w.submit(record(clock, 0))
        for _ in range(200):  # 100 s in half-second steps with a flush at each, as the writer's timer would
            before = sink.attempts
            await w.flush()
            if sink.attempts > before:
                attempts_at.append(clock.monotonic() - start)
            clock.advance(0.5)
        sink.failing = False
        clock.advance(30)
        await w.flush()
    assert [round(t) for t in attempts_at] == [0, 1, 3, 7, 15, 31, 61, 91]
    assert len(sink.ids) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert sum("is down" in m for m in messages) == 1  # one line per state change, not one per attempt
    assert sum("is back" in m for m in messages) == 1
    assert sum("caught up: 1 records replayed" in m for m in messages) == 1
    await w.aclose()


async def test_a_graceful_stop_writes_the_queue_and_every_spill_file_a_sink_takes(tmp_path: Path) -> None:
    clock, sink = ManualClock(), CapturingAuditSink(failing=True)
    w = AuditWriter([sink], spill_path=tmp_path / "spill.jsonl", clock=clock, batch_size=10, flush_interval_s=60)
    await w.start()
    records = [record(clock, i) for i in range(35)]
    for r in records[:20]:
        w.submit(r)
    await w.flush()
    assert w.stats.waiting == 20  # spilled while the sink was down
    sink.failing = False  # back, but its next retry is not due yet
    for r in records[20:]:
        w.submit(r)  # still queued in memory
    await w.aclose()
    assert sink.ids == [r.id for r in records]
    assert w.stats.waiting == 0
    assert not await asyncio.to_thread((tmp_path / "spill.jsonl.0").exists)


async def test_audit_and_spill_files_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    from portcullis.audit.jsonl import JsonlFileSink

    path = tmp_path / "audit.jsonl"
    await asyncio.to_thread(path.write_text, "")
    await asyncio.to_thread(os.chmod, path, 0o644)  # left by an older version
    clock = ManualClock()
    jsonl = JsonlFileSink(path, max_bytes=2000, backup_count=2)
    w = AuditWriter({"file": jsonl, "store": CapturingAuditSink(failing=True)}, spill_path=tmp_path / "spill.jsonl",
                    clock=clock, batch_size=5, flush_interval_s=60)
    await w.start()
    for i in range(40):
        w.submit(record(clock, i))
        if i % 5 == 4:
            await w.flush()
    await w.aclose()
    created = sorted(p.name for p in await asyncio.to_thread(lambda: list(tmp_path.iterdir())))
    assert created == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "spill.jsonl.1"]
    modes = {name: stat.S_IMODE((await asyncio.to_thread((tmp_path / name).stat)).st_mode) for name in created}
    assert modes == {name: 0o600 for name in created}
