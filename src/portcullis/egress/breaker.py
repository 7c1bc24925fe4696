"""Circuit breaker per egress endpoint: stop calling a provider that is failing, probe, recover.

Why our own (DESIGN section 6): ``pybreaker`` counts consecutive failures for one breaker in one
process; a gateway needs a failure *rate* over a window with a minimum number of calls, slow calls
counted as a second signal, a bounded number of half-open probes, operator overrides, and (with
Redis, later) state shared by every instance. The state machine is pure: time comes from the
injected clock, and every transition is reported to ``on_transition`` (audit and metrics).

    CLOSED --(failure or slow rate >= threshold, with >= min_calls in the window)--> OPEN
    OPEN --(open_s elapsed)--> HALF_OPEN: at most ``half_open_probes`` calls at once
    HALF_OPEN --(every probe succeeded)--> CLOSED;  --(a probe failed)--> OPEN
    forced_open / forced_closed: an operator's override, until ``reset``

Sharing (``egress/shared_breakers.py``): every transition this breaker makes on its own evidence
(or an operator's) goes to ``on_shared``; one another instance made arrives through ``adopt``,
which moves this breaker without reporting it back. Half-open is never shared: each instance
probes for itself once its open period ends, and a close after successful probes is shared.

What counts as a failure is the caller's call (``is_failure``): 5xx, 429, timeouts and connection
errors do; other 4xx are the client's mistake and do not.

The rates come from running counts of failed and slow calls, kept as calls enter and leave the
window: O(1) per outcome. Recounting the window on every call walked every call of the last minute
(tens of thousands under load) and was a third of the egress door's CPU.

A time-based window keeps its calls in ``_BUCKETS`` buckets of ``window_s / _BUCKETS`` seconds, as
Resilience4j's time-based sliding window keeps partial aggregations: memory is a few kilobytes
whatever the call rate (one entry per call held a minute of calls, about 20 MB at 3,500 calls a
second). A call leaves the window when its whole bucket has, so at most one bucket (1% of the
window) late. A count-based window keeps one entry per call, at most ``window_calls``.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from portcullis.clock import Clock
from portcullis.errors import CircuitOpen

__all__ = ["BreakerConfig", "BreakerState", "CircuitBreaker", "Permit", "is_failure"]

_BUCKETS = 100  # a time-based window's buckets: its calls leave at most 1% of the window late


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    FORCED_CLOSED = "forced_closed"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """``window_calls`` > 0 makes the window count-based (the last N calls); otherwise it is the
    last ``window_s`` seconds."""

    failure_rate: float = 0.5
    slow_call_rate: float = 1.0  # 1.0: slowness alone never opens
    slow_call_s: float = 10.0
    min_calls: int = 10
    window_calls: int = 0
    window_s: float = 60.0
    open_s: float = 30.0
    half_open_probes: int = 3

    def __post_init__(self) -> None:
        if not (0 < self.failure_rate <= 1 and 0 < self.slow_call_rate <= 1):
            raise ValueError("rates must be in (0, 1]")
        if self.min_calls < 1 or self.half_open_probes < 1 or self.window_calls < 0:
            raise ValueError("min_calls and half_open_probes must be at least 1")
        if self.window_calls == 0 and self.window_s <= 0:
            raise ValueError("a time window needs window_s > 0")


def is_failure(status: int | None, *, error: bool = False) -> bool:
    """Timeouts and connection errors (``error``), 5xx and 429 are failures; other answers are not."""
    return error or status is None or status >= 500 or status == 429


@dataclass(frozen=True, slots=True)
class Permit:
    """Proof that a call was admitted, and in which state (a half-open probe or a normal call)."""

    probe: bool
    generation: int  # outcomes from an older state (before a transition) are ignored


class CircuitBreaker:
    """One endpoint's breaker. Not thread-safe; one event loop owns it."""

    def __init__(
        self, name: str, config: BreakerConfig, clock: Clock,
        on_transition: Callable[[str, BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self.name = name
        self._config = config
        self._clock = clock
        self._on_transition = on_transition
        self.on_shared: Callable[[str, BreakerState, float], None] | None = None  # (route, state, open for s)
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._opened_at = 0.0
        # [bucket index (time-based) or call number (count-based), calls, failed, slow], oldest first
        self._window: deque[list[int]] = deque()
        self._bucket_s = config.window_s / _BUCKETS
        self._seq = 0
        self._total = 0  # calls in ``_window``, kept with it (O(1) per outcome)
        self._failures = 0  # failed calls in it
        self._slows = 0  # slow calls in it
        self._probes_out = 0
        self._probes_ok = 0

    @property
    def state(self) -> BreakerState:
        self._maybe_half_open()
        return self._state

    def retry_after_s(self) -> float:
        """Seconds until an open breaker will admit a probe (0 when it admits calls now)."""
        if self._state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self._config.open_s - self._clock.monotonic())
        if self._state is BreakerState.FORCED_OPEN:
            return self._config.open_s
        return 0.0

    def acquire(self) -> Permit:
        """Admit a call or raise ``CircuitOpen`` (503 with Retry-After)."""
        self._maybe_half_open()
        state = self._state
        if state is BreakerState.CLOSED or state is BreakerState.FORCED_CLOSED:
            return Permit(False, self._generation)
        if state is BreakerState.HALF_OPEN and self._probes_out < self._config.half_open_probes:
            self._probes_out += 1
            return Permit(True, self._generation)
        raise CircuitOpen(f"circuit_open:{self.name}", retry_after_s=self.retry_after_s())

    def record(self, permit: Permit, *, failed: bool, duration_s: float) -> None:
        """The outcome of an admitted call."""
        if permit.generation != self._generation:
            return  # the breaker changed state while this call was in flight
        slow = duration_s >= self._config.slow_call_s
        if permit.probe:
            if failed or slow:
                self._transition(BreakerState.OPEN)
                return
            self._probes_ok += 1
            if self._probes_ok >= self._config.half_open_probes:
                self._transition(BreakerState.CLOSED)
            return
        if self._state is not BreakerState.CLOSED:
            return  # forced states do not learn
        now = self._clock.monotonic()
        window = self._window
        if self._config.window_calls:
            self._seq += 1
            window.append([self._seq, 1, failed, slow])
        else:
            key = int(now // self._bucket_s)
            if window and window[-1][0] == key:
                last = window[-1]
                last[1] += 1
                last[2] += failed
                last[3] += slow
            else:
                window.append([key, 1, failed, slow])
        self._total += 1
        self._failures += failed
        self._slows += slow
        self._trim(now)
        calls = self._total
        if calls < self._config.min_calls:
            return
        if self._failures / calls >= self._config.failure_rate or self._slows / calls >= self._config.slow_call_rate:
            self._transition(BreakerState.OPEN)

    def release(self, permit: Permit) -> None:
        """A probe that ended without an outcome (cancelled): its slot is free again."""
        if permit.probe and permit.generation == self._generation and self._probes_out > 0:
            self._probes_out -= 1

    def force(self, state: BreakerState) -> None:
        """An operator's override: ``FORCED_OPEN`` or ``FORCED_CLOSED``."""
        if state not in (BreakerState.FORCED_OPEN, BreakerState.FORCED_CLOSED):
            raise ValueError("only forced_open or forced_closed can be forced")
        self._transition(state)

    def reset(self) -> None:
        """Back to CLOSED with an empty window (also ends a forced state)."""
        self._transition(BreakerState.CLOSED)

    def adopt(self, state: BreakerState, open_for_s: float = 0.0) -> None:
        """Take a state another instance reached (``open_for_s``: what is left of its open period).
        An operator's forced state here is only changed by another operator's action."""
        if state is BreakerState.HALF_OPEN:
            return
        if state is BreakerState.OPEN:
            if self._state in (BreakerState.FORCED_OPEN, BreakerState.FORCED_CLOSED):
                return
            opened_at = self._clock.monotonic() - max(0.0, self._config.open_s - open_for_s)
            if self._state is BreakerState.OPEN:
                self._opened_at = max(self._opened_at, opened_at)  # the later opening decides
            else:
                self._transition(BreakerState.OPEN, shared=False)
                self._opened_at = opened_at
            return
        if state is BreakerState.CLOSED and self._state is BreakerState.CLOSED:
            return
        self._transition(state, shared=False)

    # --- internals -------------------------------------------------------------------------

    def _maybe_half_open(self) -> None:
        if self._state is BreakerState.OPEN and self._clock.monotonic() >= self._opened_at + self._config.open_s:
            self._transition(BreakerState.HALF_OPEN)

    def _trim(self, now: float) -> None:
        window = self._window
        if self._config.window_calls:
            while self._total > self._config.window_calls:
                self._forget(window.popleft())
        else:
            # a bucket leaves once it ends at or before the horizon (all of its calls have)
            first_kept = (now - self._config.window_s) / self._bucket_s - 1
            while window and window[0][0] <= first_kept:
                self._forget(window.popleft())

    def _forget(self, entry: list[int]) -> None:
        _, calls, failed, slow = entry
        self._total -= calls
        self._failures -= failed
        self._slows -= slow

    def _transition(self, to: BreakerState, *, shared: bool = True) -> None:
        before = self._state
        self._state = to
        self._generation += 1
        self._window.clear()
        self._total = self._failures = self._slows = 0
        self._probes_out = 0
        self._probes_ok = 0
        if to is BreakerState.OPEN:
            self._opened_at = self._clock.monotonic()
        if before is not to and self._on_transition is not None:
            self._on_transition(self.name, before, to)
        if shared and before is not to and to is not BreakerState.HALF_OPEN and self.on_shared is not None:
            self.on_shared(self.name, to, self._config.open_s if to is BreakerState.OPEN else 0.0)
