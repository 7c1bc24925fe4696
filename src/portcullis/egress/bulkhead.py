"""A bulkhead per egress endpoint: at most N calls in flight, a bounded queue by priority class, shedding.

Why: a provider that slows down holds every worker that calls it, and a retry storm or one runaway
workflow can take an endpoint's whole capacity from the calls that matter (seed 000, GAP-12: no
request prioritization). A bulkhead caps the calls in flight per endpoint; calls beyond the cap
wait in a short queue, served by priority class (highest first, first come first served within a
class), and the queue sheds rather than grows:

- **full queue**: a newcomer of a higher class takes the place of the newest waiter of the lowest
  class below it (that waiter is refused with ``Shed``, 503 with ``Retry-After``); a newcomer with
  no lower class to displace is itself refused. Lower classes are therefore shed first, and the
  oldest waiters of a class keep their place;
- **queue timeout**: a waiter not admitted within ``queue_timeout_s`` is refused the same way. As
  higher classes go first, a saturated endpoint times out its lowest classes first;
- **cancellation**: a waiter whose task is cancelled leaves the queue; a permit handed to a task
  that was cancelled in the same instant passes on to the next waiter. A permit is released once,
  however often ``release`` is called, so capacity never leaks.

Strict priority can starve the lowest class while higher ones keep the endpoint saturated; the
queue timeout bounds how long any call waits for that, and the shed metric shows it happening.

Time is injected: a ``Clock`` for wait times and a ``Timer`` for deadlines, so tests drive the
queue timeout without waiting. What this module does not do: decide a call's class (the door and
route config do), or count towards the breaker (a shed call never reached the provider).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

from portcullis.clock import Clock
from portcullis.errors import Shed

__all__ = [
    "DEFAULT_CLASSES",
    "Bulkhead",
    "BulkheadConfig",
    "BulkheadObserver",
    "LoopTimer",
    "Permit",
    "Timer",
    "TimerHandle",
]

DEFAULT_CLASSES = ("critical", "high", "normal", "low", "bulk")

SHED_QUEUE_FULL = "queue_full"  # the newcomer found the queue full and no lower class to displace
SHED_EVICTED = "evicted"  # a waiter displaced by a newcomer of a higher class
SHED_TIMEOUT = "queue_timeout"  # a waiter not admitted within the queue timeout


class TimerHandle(Protocol):
    def cancel(self) -> None:
        """Stop the callback from running (no effect once it ran)."""
        ...


class Timer(Protocol):
    """Runs a callback later: the event loop's ``call_later``, or a test's manual timer."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` after ``delay`` seconds, on the loop, unless the handle is cancelled."""
        ...


class LoopTimer:
    """The running event loop's timer."""

    __slots__ = ()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(delay, callback)


class BulkheadObserver(Protocol):
    """Where a bulkhead reports (``GatewayMetrics`` implements it): bounded labels, route and class."""

    def bulkhead_depth(self, route: str, priority: str, depth: int) -> None:
        """The number of calls of ``priority`` waiting for ``route`` changed to ``depth``."""
        ...

    def bulkhead_shed(self, route: str, priority: str, reason: str) -> None:
        """A call of ``priority`` was refused: ``queue_full``, ``evicted`` or ``queue_timeout``."""
        ...

    def bulkhead_waited(self, route: str, priority: str, seconds: float) -> None:
        """A call that queued was admitted after ``seconds``."""
        ...


@dataclass(frozen=True, slots=True)
class BulkheadConfig:
    """``classes`` from highest to lowest priority; ``max_queue`` 0 refuses at once when full."""

    max_concurrent: int
    max_queue: int = 0
    queue_timeout_s: float = 5.0
    classes: tuple[str, ...] = DEFAULT_CLASSES
    default_class: str = "normal"
    retry_after_s: float = 1.0

    def __post_init__(self) -> None:
        if self.max_concurrent < 1 or self.max_queue < 0 or self.queue_timeout_s <= 0 or self.retry_after_s < 0:
            raise ValueError("need max_concurrent >= 1, max_queue >= 0, a positive queue timeout")
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError("priority classes must be a non-empty list of distinct names")
        if self.default_class not in self.classes:
            raise ValueError(f"default_class {self.default_class!r} is not one of the classes")


@dataclass(slots=True, eq=False)
class _Waiter:
    rank: int
    future: asyncio.Future[None]
    enqueued: float
    timeout: TimerHandle | None = field(default=None)


class Permit:
    """One place among the endpoint's calls in flight; ``release`` (or leaving ``async with``) gives it back.

    Releasing twice is harmless, so a ``finally`` and an error path cannot free the place twice."""

    __slots__ = ("_bulkhead", "priority", "waited_s")

    def __init__(self, bulkhead: Bulkhead, priority: str, waited_s: float) -> None:
        self._bulkhead: Bulkhead | None = bulkhead
        self.priority = priority
        self.waited_s = waited_s

    def release(self) -> None:
        bulkhead, self._bulkhead = self._bulkhead, None
        if bulkhead is not None:
            bulkhead._release()

    async def __aenter__(self) -> Permit:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        self.release()


class Bulkhead:
    """The concurrency cap and priority queue of one endpoint (one event loop)."""

    def __init__(
        self, route: str, config: BulkheadConfig, *, clock: Clock, timer: Timer | None = None,
        observer: BulkheadObserver | None = None,
    ) -> None:
        self.route = route
        self.config = config
        self._clock = clock
        self._timer: Timer = timer or LoopTimer()
        self._observer = observer
        self._rank = {name: i for i, name in enumerate(config.classes)}
        self._queues: list[deque[_Waiter]] = [deque() for _ in config.classes]
        self._waiting = 0
        self.in_use = 0

    def rank(self, priority: str | None) -> int:
        """The class's position (0 is the highest); ``None`` is the default class. Unknown: ``ValueError``."""
        try:
            return self._rank[priority or self.config.default_class]
        except KeyError:
            raise ValueError(f"{priority!r} is not a priority class of {self.route}") from None

    def depth(self, priority: str | None = None) -> int:
        """Calls waiting: of one class, or of all."""
        return self._waiting if priority is None else len(self._queues[self.rank(priority)])

    async def acquire(self, priority: str | None = None) -> Permit:
        """A place among the calls in flight, now or after waiting; ``Shed`` when refused."""
        rank = self.rank(priority)
        name = self.config.classes[rank]
        if self.in_use < self.config.max_concurrent and not self._waiting:
            self.in_use += 1
            return Permit(self, name, 0.0)
        if self._waiting >= self.config.max_queue and not self._evict_below(rank):
            self._shed(name, SHED_QUEUE_FULL)
            raise Shed(f"shed:{SHED_QUEUE_FULL}", retry_after_s=self.config.retry_after_s)
        waiter = _Waiter(rank, asyncio.get_running_loop().create_future(), self._clock.monotonic())
        self._enqueue(waiter)
        timeout = waiter.timeout = self._timer.call_later(self.config.queue_timeout_s, lambda: self._expire(waiter))
        try:
            await waiter.future
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise
        finally:
            timeout.cancel()
        waited = self._clock.monotonic() - waiter.enqueued
        if self._observer is not None:
            self._observer.bulkhead_waited(self.route, name, waited)
        return Permit(self, name, waited)

    def _enqueue(self, waiter: _Waiter) -> None:
        queue = self._queues[waiter.rank]
        queue.append(waiter)
        self._waiting += 1
        self._depth_changed(waiter.rank)

    def _dequeue(self, waiter: _Waiter) -> bool:
        queue = self._queues[waiter.rank]
        try:
            queue.remove(waiter)
        except ValueError:
            return False
        self._waiting -= 1
        self._depth_changed(waiter.rank)
        return True

    def _evict_below(self, rank: int) -> bool:
        """Refuse the newest waiter of the lowest class below ``rank``; False when there is none."""
        for lower in range(len(self._queues) - 1, rank, -1):
            queue = self._queues[lower]
            if queue:
                victim = queue[-1]
                self._dequeue(victim)
                self._refuse(victim, SHED_EVICTED)
                return True
        return False

    def _expire(self, waiter: _Waiter) -> None:
        if not waiter.future.done() and self._dequeue(waiter):
            self._refuse(waiter, SHED_TIMEOUT)

    def _refuse(self, waiter: _Waiter, reason: str) -> None:
        if waiter.timeout is not None:
            waiter.timeout.cancel()
        self._shed(self.config.classes[waiter.rank], reason)
        waiter.future.set_exception(Shed(f"shed:{reason}", retry_after_s=self.config.retry_after_s))

    def _abandon(self, waiter: _Waiter) -> None:
        """The waiting task was cancelled: leave the queue, or pass on a permit it was just handed."""
        future = waiter.future
        if not future.done() or future.cancelled():
            self._dequeue(waiter)
        elif future.exception() is None:  # handed a place in the same instant: give it on
            self._release()

    def _release(self) -> None:
        """A call finished: its place passes to the oldest waiter of the highest class, or is freed."""
        for rank, queue in enumerate(self._queues):
            while queue:
                waiter = queue.popleft()
                self._waiting -= 1
                self._depth_changed(rank)
                if not waiter.future.done():
                    waiter.future.set_result(None)
                    return
        self.in_use -= 1

    def _shed(self, priority: str, reason: str) -> None:
        if self._observer is not None:
            self._observer.bulkhead_shed(self.route, priority, reason)

    def _depth_changed(self, rank: int) -> None:
        if self._observer is not None:
            self._observer.bulkhead_depth(self.route, self.config.classes[rank], len(self._queues[rank]))

