"""Readiness checks: side by side, each bounded, a stuck one reported and not started twice.

The probes are plain coroutines that wait on an ``asyncio.Event`` the test controls: what is under
test is the runner's timing and bookkeeping, not any store (the integration tests hang a real
PostgreSQL). The timeouts are real loop time, kept short and only ever asserted as upper bounds.
"""

from __future__ import annotations

import asyncio

import pytest

from portcullis.observability.readiness import Check, CheckStatus, ReadinessProbe


def answering(status: CheckStatus) -> Check:
    async def probe() -> CheckStatus:
        return status

    return Check(status.value + "_check", probe, 0.05, on_timeout=CheckStatus.UNAVAILABLE)


async def test_a_check_that_never_answers_is_reported_with_its_timeout_status_and_named() -> None:
    gate = asyncio.Event()
    started = 0

    async def stuck() -> CheckStatus:
        nonlocal started
        started += 1
        await gate.wait()
        return CheckStatus.OK

    checks = [answering(CheckStatus.OK), Check("store", stuck, 0.05, on_timeout=CheckStatus.DEGRADED)]
    probe = ReadinessProbe(deadline_s=1.0)
    for _ in range(3):
        report = await probe.run(checks)
        assert report.to_json() == {"status": "ready", "checks": {"ok_check": "ok", "store": "degraded"},
                                    "timed_out": ["store"]}
    assert started == 1  # asked again while stuck: the same probe is awaited, no second one starts
    gate.set()  # the dependency answers again
    report = await probe.run(checks)
    assert report.checks["store"] is CheckStatus.OK and report.timed_out == ()


async def test_a_check_that_raises_reports_its_error_status_and_the_instance_is_not_ready() -> None:
    async def broken() -> CheckStatus:
        raise ConnectionResetError("gone")

    report = await ReadinessProbe(deadline_s=1.0).run(
        [answering(CheckStatus.OK), Check("store", broken, 0.5, on_timeout=CheckStatus.DEGRADED)])
    assert report.to_json() == {"status": "not_ready", "checks": {"ok_check": "ok", "store": "unavailable"},
                                "timed_out": []}


async def test_a_check_timeout_longer_than_the_deadline_is_cut_to_the_deadline() -> None:
    never = asyncio.Event()

    async def stuck() -> CheckStatus:
        await never.wait()
        return CheckStatus.OK

    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await ReadinessProbe(deadline_s=0.05).run([Check("store", stuck, 60.0, on_timeout=CheckStatus.OK)])
    assert loop.time() - started < 30.0  # bounded by the deadline, not by the check's own 60 s
    assert report.timed_out == ("store",) and report.ready


def test_a_deadline_must_be_positive() -> None:
    with pytest.raises(ValueError, match="deadline_s"):
        ReadinessProbe(deadline_s=0)
