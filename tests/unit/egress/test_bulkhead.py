"""The endpoint bulkhead: the cap, priority order, shedding, the queue timeout and cancellation.

Time is a ``ManualClock`` and a manual timer that fires only when the test advances it; tasks
are run with ``ready()``, which lets the loop run every task that can run (no wall time passes).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import pytest

from portcullis.egress.bulkhead import Bulkhead, BulkheadConfig, Permit
from portcullis.errors import ErrorCode, Shed
from portcullis.testing import ManualClock, ManualTimer


@dataclass
class Observer:
    depths: dict[str, int] = field(default_factory=dict)
    sheds: list[tuple[str, str]] = field(default_factory=list)
    waits: list[tuple[str, float]] = field(default_factory=list)

    def bulkhead_depth(self, route: str, priority: str, depth: int) -> None:
        self.depths[priority] = depth

    def bulkhead_shed(self, route: str, priority: str, reason: str) -> None:
        self.sheds.append((priority, reason))

    def bulkhead_waited(self, route: str, priority: str, seconds: float) -> None:
        self.waits.append((priority, seconds))


async def ready() -> None:
    """Let every runnable task run until it waits again (loop turns, not time)."""
    for _ in range(3):
        await asyncio.sleep(0)


def make(max_concurrent: int = 1, max_queue: int = 10, timeout: float = 5.0) -> tuple[Bulkhead, ManualTimer, Observer]:
    clock = ManualClock()
    timer = ManualTimer(clock)
    observer = Observer()
    config = BulkheadConfig(max_concurrent=max_concurrent, max_queue=max_queue, queue_timeout_s=timeout,
                            retry_after_s=2.0)
    return Bulkhead("llm", config, clock=clock, timer=timer, observer=observer), timer, observer


async def test_calls_up_to_the_cap_go_at_once_and_the_next_waits_for_a_place() -> None:
    bulkhead, _, _ = make(max_concurrent=2)
    first, second = await bulkhead.acquire(), await bulkhead.acquire()
    third = asyncio.create_task(bulkhead.acquire())
    await ready()
    assert not third.done() and bulkhead.in_use == 2 and bulkhead.depth() == 1
    first.release()
    await ready()
    assert third.done() and bulkhead.in_use == 2 and bulkhead.depth() == 0
    second.release()
    (await third).release()
    assert bulkhead.in_use == 0


async def test_waiters_are_admitted_highest_class_first_and_in_arrival_order_within_a_class() -> None:
    bulkhead, _, _ = make()
    holder = await bulkhead.acquire()
    admitted: list[str] = []

    async def call(name: str, priority: str) -> None:
        permit = await bulkhead.acquire(priority)
        admitted.append(name)
        permit.release()

    arrivals = [("bulk-1", "bulk"), ("normal-1", "normal"), ("high-1", "high"), ("normal-2", "normal"),
                ("critical-1", "critical"), ("low-1", "low"), ("high-2", "high")]
    tasks = []
    for name, priority in arrivals:
        tasks.append(asyncio.create_task(call(name, priority)))
        await ready()
    holder.release()
    await asyncio.gather(*tasks)
    assert admitted == ["critical-1", "high-1", "high-2", "normal-1", "normal-2", "low-1", "bulk-1"]


async def test_a_full_queue_sheds_the_newest_waiter_of_the_lowest_class_for_a_higher_newcomer() -> None:
    bulkhead, _, observer = make(max_queue=3)
    holder = await bulkhead.acquire()
    low_1 = asyncio.create_task(bulkhead.acquire("low"))
    await ready()
    bulk_1 = asyncio.create_task(bulkhead.acquire("bulk"))
    await ready()
    low_2 = asyncio.create_task(bulkhead.acquire("low"))
    await ready()
    high = asyncio.create_task(bulkhead.acquire("high"))  # queue full: bulk-1 is the lowest class
    await ready()
    with pytest.raises(Shed) as shed:
        await bulk_1
    assert shed.value.reason == "shed:evicted" and shed.value.retry_after_s == 2.0
    assert shed.value.code is ErrorCode.EGRESS_SHED
    normal = asyncio.create_task(bulkhead.acquire("normal"))  # full again: low-2 is the newest lowest
    await ready()
    with pytest.raises(Shed):
        await low_2
    assert not low_1.done()  # the oldest of its class keeps its place
    assert observer.sheds == [("bulk", "evicted"), ("low", "evicted")]
    holder.release()
    for task in (high, normal, low_1):
        (await task).release()
    assert bulkhead.in_use == 0


@pytest.mark.parametrize("newcomer", ["normal", "low"], ids=["same-class", "lower-class"])
async def test_a_newcomer_with_no_lower_class_to_displace_is_shed_itself(newcomer: str) -> None:
    bulkhead, _, observer = make(max_queue=1)
    holder = await bulkhead.acquire()
    waiting = asyncio.create_task(bulkhead.acquire("normal"))
    await ready()
    with pytest.raises(Shed) as shed:
        await bulkhead.acquire(newcomer)
    assert shed.value.reason == "shed:queue_full"
    assert observer.sheds == [(newcomer, "queue_full")]
    holder.release()
    (await waiting).release()


async def test_without_a_queue_a_saturated_endpoint_refuses_at_once() -> None:
    bulkhead, _, _ = make(max_queue=0)
    holder = await bulkhead.acquire("bulk")
    with pytest.raises(Shed):
        await bulkhead.acquire("critical")
    holder.release()
    (await bulkhead.acquire("bulk")).release()


async def test_a_waiter_not_admitted_within_the_queue_timeout_is_shed_and_leaves_the_queue() -> None:
    bulkhead, timer, observer = make(timeout=5.0)
    holder = await bulkhead.acquire()
    waiter = asyncio.create_task(bulkhead.acquire("low"))
    await ready()
    timer.advance(4.9)
    await ready()
    assert not waiter.done()
    timer.advance(0.2)
    with pytest.raises(Shed) as shed:
        await waiter
    assert shed.value.reason == "shed:queue_timeout"
    assert bulkhead.depth() == 0 and observer.depths["low"] == 0 and observer.sheds == [("low", "queue_timeout")]
    holder.release()
    assert bulkhead.in_use == 0


async def test_an_admitted_waiter_is_not_shed_by_its_old_deadline() -> None:
    bulkhead, timer, observer = make(timeout=5.0)
    holder = await bulkhead.acquire()
    waiter = asyncio.create_task(bulkhead.acquire())
    await ready()
    timer.advance(3.0)
    holder.release()
    permit = await waiter
    timer.advance(10.0)
    assert observer.sheds == [] and bulkhead.in_use == 1
    assert permit.waited_s == pytest.approx(3.0)
    assert [(priority, round(seconds, 6)) for priority, seconds in observer.waits] == [("normal", 3.0)]
    permit.release()


async def test_a_cancelled_waiter_frees_its_place_in_the_queue() -> None:
    bulkhead, _, observer = make(max_queue=1)
    holder = await bulkhead.acquire()
    waiter = asyncio.create_task(bulkhead.acquire("normal"))
    await ready()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert bulkhead.depth() == 0 and observer.depths["normal"] == 0
    other = asyncio.create_task(bulkhead.acquire("normal"))  # the place is free again
    await ready()
    holder.release()
    (await other).release()
    assert bulkhead.in_use == 0 and observer.sheds == []


async def test_a_permit_handed_to_a_task_cancelled_in_the_same_instant_passes_on() -> None:
    bulkhead, _, _ = make()
    holder = await bulkhead.acquire()
    doomed = asyncio.create_task(bulkhead.acquire())
    await ready()
    next_in_line = asyncio.create_task(bulkhead.acquire())
    await ready()
    holder.release()  # hands the place to `doomed` ...
    doomed.cancel()  # ... which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await doomed
    permit = await next_in_line
    assert bulkhead.in_use == 1
    permit.release()
    assert bulkhead.in_use == 0


async def test_releasing_a_permit_twice_frees_one_place_only() -> None:
    bulkhead, _, _ = make(max_concurrent=2)
    first = await bulkhead.acquire()
    second = await bulkhead.acquire()
    async with first:
        pass
    first.release()
    assert bulkhead.in_use == 1
    second.release()
    assert bulkhead.in_use == 0


async def test_an_unknown_class_is_refused_and_none_is_the_default_class() -> None:
    bulkhead, _, _ = make()
    with pytest.raises(ValueError, match="not a priority class"):
        await bulkhead.acquire("urgent!!")
    permit = await bulkhead.acquire(None)
    assert permit.priority == "normal"
    permit.release()


@pytest.mark.parametrize("bad", [
    {"max_concurrent": 0}, {"max_queue": -1}, {"queue_timeout_s": 0}, {"classes": ()},
    {"classes": ("a", "a")}, {"default_class": "nope"},
], ids=["no-concurrency", "negative-queue", "no-timeout", "no-classes", "repeated-class", "unknown-default"])
def test_nonsense_configs_are_refused(bad: dict[str, object]) -> None:
    kwargs: dict[str, object] = {"max_concurrent": 1, **bad}
    with pytest.raises(ValueError, match=r"need|classes|default_class"):
        BulkheadConfig(**kwargs)  # type: ignore[arg-type]


async def test_under_random_load_the_cap_and_the_queue_bound_hold_and_every_place_comes_back() -> None:
    rng = random.Random(2026)
    bulkhead, timer, _ = make(max_concurrent=3, max_queue=4, timeout=2.0)
    classes = bulkhead.config.classes
    held: list[Permit] = []
    tasks: list[asyncio.Task[Permit]] = []
    outcomes = {"admitted": 0, "shed": 0, "cancelled": 0}

    def harvest() -> None:
        for task in [t for t in tasks if t.done()]:
            tasks.remove(task)
            if task.cancelled():
                outcomes["cancelled"] += 1
            elif isinstance(task.exception(), Shed):
                outcomes["shed"] += 1
            else:
                held.append(task.result())
                outcomes["admitted"] += 1

    for _ in range(2000):
        action = rng.random()
        if action < 0.45:
            tasks.append(asyncio.create_task(bulkhead.acquire(rng.choice(classes))))
        elif action < 0.75 and held:
            held.pop(rng.randrange(len(held))).release()
        elif action < 0.85 and tasks:
            tasks[rng.randrange(len(tasks))].cancel()
        else:
            timer.advance(rng.uniform(0, 1.5))
        await ready()
        harvest()
        assert bulkhead.in_use <= 3 and bulkhead.depth() <= 4
        assert bulkhead.in_use == len(held)  # no place held by a task that is gone
    while tasks or held:
        for permit in held:
            permit.release()
        held.clear()
        timer.advance(5.0)
        await ready()
        harvest()
    assert bulkhead.in_use == 0 and bulkhead.depth() == 0
    assert min(outcomes.values()) > 0  # the run exercised admission, shedding and cancellation
