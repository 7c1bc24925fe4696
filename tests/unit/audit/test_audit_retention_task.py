"""The gateway's periodic retention run: what is old is decided on the injected clock, and a store
that is down costs one logged warning, never the gateway."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tests.audit_trail import SIGNER, closing, sealed_batches

from portcullis.audit.chain import Chainer
from portcullis.audit.retention import ExpiryResult, RetentionTask
from portcullis.config.model import AuditRetentionConfig
from portcullis.stores.base import AuditSearch
from portcullis.stores.sqlite import SqliteStore
from portcullis.testing import ManualClock

DAY = 86_400.0


async def test_a_run_removes_what_the_clock_says_has_expired_and_reports_it(tmp_path: Path) -> None:
    clock = ManualClock()
    store = await SqliteStore.connect(str(tmp_path / "s.db"))
    try:
        chainer = Chainer(clock=clock, signer=SIGNER, every=10)
        for batch in [*sealed_batches(chainer, clock, 25), closing(chainer)]:
            await store.write(batch)
        reported: list[ExpiryResult] = []
        task = RetentionTask(store, AuditRetentionConfig(debug="1d"), clock=clock, every_s=600, batch_rows=4,
                             max_rows=1000, on_expired=reported.append)
        assert (await task.run_once()).total == 0
        clock.advance(90 * DAY + 1)
        assert (await task.run_once()).deleted == {"request": 25}
        assert (await store.search_audit(AuditSearch())).records == []
        assert [r.deleted for r in reported] == [{"request": 25}]  # the gateway submits it as a security event
    finally:
        await store.aclose()


async def test_a_store_that_is_down_is_logged_and_the_run_counts_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await SqliteStore.connect(str(tmp_path / "s.db"))
    await store.aclose()  # every call now raises StoreUnavailable
    task = RetentionTask(store, AuditRetentionConfig(), clock=ManualClock(), every_s=600, batch_rows=4, max_rows=10)
    with caplog.at_level(logging.WARNING, logger="portcullis.audit"):
        assert (await task.run_once()).total == 0
    assert "audit retention run failed" in caplog.text


async def test_the_task_starts_and_stops_without_waiting_for_its_interval(tmp_path: Path) -> None:
    store = await SqliteStore.connect(str(tmp_path / "s.db"))
    try:
        task = RetentionTask(store, AuditRetentionConfig(), clock=ManualClock(), every_s=3600, batch_rows=4,
                             max_rows=10)
        task.start()
        await task.aclose()
        assert task.runs == 0
    finally:
        await store.aclose()
