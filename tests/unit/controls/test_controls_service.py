"""``IncidentControls``: acts apply on this instance at once and are announced to the others; the
snapshot follows the store on refresh, keeps what is in force when the store is down, and stops
applying a control at its expiry with no event at all. Time is a manual clock.
"""

from __future__ import annotations

import asyncio

import pytest

from portcullis.audit.record import AuditRecord
from portcullis.controls import BlockKind, EmergencyScope, IncidentControls
from portcullis.errors import InvalidControl, StoreUnavailable
from portcullis.stores.base import ControlRecord
from portcullis.stores.memory_controls import MemoryControlStore
from portcullis.testing import ManualClock


class Announcements:
    def __init__(self) -> None:
        self.count = 0

    async def publish(self) -> bool:
        self.count += 1
        return True


class UnreachableStore(MemoryControlStore):
    """A real memory store that can be switched off, as a database outage looks to the service."""

    down = False

    async def list_controls(self, *, active_at: float | None = None) -> list[ControlRecord]:
        if self.down:
            raise StoreUnavailable("postgres: ConnectionRefusedError")
        return await super().list_controls(active_at=active_at)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def test_a_block_applies_on_this_instance_at_once_and_is_announced(clock: ManualClock) -> None:
    said = Announcements()
    controls = IncidentControls(MemoryControlStore(), clock, publish=said.publish)
    block = await controls.add_block(BlockKind.WORKFLOW, "wf-loop", reason="runaway loop", actor="token:t")
    assert controls.snapshot.block(BlockKind.WORKFLOW, "wf-loop", clock.wall()) == block
    assert said.count == 1


async def test_another_instance_sees_the_block_after_it_re_reads_the_store(clock: ManualClock) -> None:
    store = MemoryControlStore()
    here, there = IncidentControls(store, clock), IncidentControls(store, clock)
    block = await here.add_block(BlockKind.USER, "u-42", reason="abuse", actor="token:t")
    assert there.snapshot.block(BlockKind.USER, "u-42", clock.wall()) is None
    await there.refresh()
    assert there.snapshot.block(BlockKind.USER, "u-42", clock.wall()) == block


async def test_a_block_stops_applying_at_its_expiry_without_any_event(clock: ManualClock) -> None:
    controls = IncidentControls(MemoryControlStore(), clock)
    await controls.add_block(BlockKind.KEY, "key_1", reason="leaked", actor="token:t", expires_in_s=60.0)
    clock.advance(59.9)
    assert controls.snapshot.block(BlockKind.KEY, "key_1", clock.wall()) is not None
    clock.advance(0.1)
    assert controls.snapshot.block(BlockKind.KEY, "key_1", clock.wall()) is None


async def test_lifting_ends_a_block_here_at_once_and_everywhere_after_a_re_read(clock: ManualClock) -> None:
    store = MemoryControlStore()
    said = Announcements()
    here, there = IncidentControls(store, clock, publish=said.publish), IncidentControls(store, clock)
    block = await here.add_block(BlockKind.CONSUMER, "mallory", reason="scraping", actor="token:t")
    await there.refresh()
    assert await here.lift_block(block.block_id, actor="token:u") is True
    assert here.snapshot.block(BlockKind.CONSUMER, "mallory", clock.wall()) is None
    await there.refresh()
    assert there.snapshot.block(BlockKind.CONSUMER, "mallory", clock.wall()) is None
    assert said.count == 2
    assert await here.lift_block(block.block_id, actor="token:u") is False


async def test_a_block_made_elsewhere_can_be_lifted_here_before_any_re_read(clock: ManualClock) -> None:
    store = MemoryControlStore()
    here, there = IncidentControls(store, clock), IncidentControls(store, clock)
    block = await there.add_block(BlockKind.EXECUTION, "run-9", reason="loop", actor="token:t")
    assert await here.lift_block(block.block_id, actor="token:u") is True
    assert [b.block_id for b in await here.list_blocks(include_inactive=True)] == [block.block_id]
    assert await here.list_blocks() == []


async def test_a_store_that_cannot_be_read_leaves_the_blocks_in_force(clock: ManualClock) -> None:
    store = UnreachableStore()
    controls = IncidentControls(store, clock)
    await controls.add_block(BlockKind.ADDRESS, "198.51.100.0/24", reason="flood", actor="token:t")
    store.down = True
    with pytest.raises(StoreUnavailable):
        await controls.refresh()
    assert controls.snapshot.address_block("198.51.100.9", clock.wall()) is not None


async def test_an_emergency_limit_scales_its_route_and_ramps_back(clock: ManualClock) -> None:
    controls = IncidentControls(MemoryControlStore(), clock)
    await controls.add_emergency(EmergencyScope.ROUTE, "orders", 0.1, duration_s=60.0, restore_s=100.0,
                                 reason="suspected DDoS", actor="token:t")
    assert controls.snapshot.factor("orders", "alice", clock.wall()) == pytest.approx(0.1)
    assert controls.snapshot.factor("health", "alice", clock.wall()) == 1.0
    clock.advance(110.0)
    assert controls.snapshot.factor("orders", "alice", clock.wall()) == pytest.approx(0.55)
    clock.advance(50.0)
    assert controls.snapshot.factor("orders", "alice", clock.wall()) == 1.0


async def test_lifting_an_emergency_restores_the_limits_at_once(clock: ManualClock) -> None:
    controls = IncidentControls(MemoryControlStore(), clock)
    emergency = await controls.add_emergency(EmergencyScope.GATEWAY, "", 0.5, duration_s=60.0, restore_s=60.0,
                                             reason="load", actor="token:t")
    assert await controls.lift_emergency(emergency.emergency_id, actor="token:t") is True
    assert controls.snapshot.factor("orders", None, clock.wall()) == 1.0
    assert await controls.list_emergencies() == []


@pytest.mark.parametrize(("factor", "duration", "restore", "subject", "field"), [
    (0.0, 60.0, 0.0, "", "factor"), (1.5, 60.0, 0.0, "", "factor"), (0.5, 0.0, 0.0, "", "duration_s"),
    (0.5, 60.0, -1.0, "", "restore_s"), (0.5, 60.0, 0.0, "orders", "subject"),
], ids=["zero-factor", "factor-above-one", "no-duration", "negative-restore", "gateway-with-a-subject"])
async def test_an_emergency_limit_that_cannot_be_enforced_is_refused(
    clock: ManualClock, factor: float, duration: float, restore: float, subject: str, field: str
) -> None:
    controls = IncidentControls(MemoryControlStore(), clock)
    with pytest.raises(InvalidControl, match=field):
        await controls.add_emergency(EmergencyScope.GATEWAY, subject, factor, duration_s=duration,
                                     restore_s=restore, reason="r", actor="token:t")
    assert await controls.list_emergencies(include_inactive=True) == []


@pytest.mark.parametrize("reason", ["", "   ", "line\nbreak", "x" * 1001], ids=["empty", "blank", "newline", "long"])
async def test_a_block_needs_a_reason(clock: ManualClock, reason: str) -> None:
    with pytest.raises(InvalidControl, match="reason"):
        await IncidentControls(MemoryControlStore(), clock).add_block(BlockKind.USER, "u", reason=reason,
                                                                       actor="token:t")


async def test_refusals_make_one_security_event_per_block_per_minute_with_a_count(clock: ManualClock) -> None:
    events: list[AuditRecord] = []
    controls = IncidentControls(MemoryControlStore(), clock, submit=events.append)
    block = await controls.add_block(BlockKind.ADDRESS, "192.0.2.1", reason="flood", actor="token:t")
    for _ in range(5):
        controls.refused(block, client_ip="192.0.2.1", request_id="r", actor="anonymous", where="shield")
    clock.advance(60.0)
    controls.refused(block, client_ip="192.0.2.1", request_id="r2", actor="anonymous", where="shield")
    assert [(e.record_class, e.decision) for e in events] == [("security", "block.enforced:denied")] * 2
    assert events[0].event is not None and events[1].event is not None
    assert events[0].event["block_id"] == block.block_id
    assert events[1].event["refusals_since_last_event"] == 4
    assert "flood" not in str(events[0])  # the operator's reason stays in the control, not in each refusal


async def test_the_periodic_re_read_heals_a_missed_event(clock: ManualClock) -> None:
    store = MemoryControlStore()
    here, there = IncidentControls(store, clock), IncidentControls(store, clock)  # no events between them
    there.start(0.05)  # the operational timer runs on real time; the bound below is its deadline
    try:
        block = await here.add_block(BlockKind.USER, "u-7", reason="abuse", actor="token:t")
        async with asyncio.timeout(2.0):
            while there.snapshot.block(BlockKind.USER, "u-7", clock.wall()) != block:
                await asyncio.sleep(0.01)
    finally:
        await there.aclose()
