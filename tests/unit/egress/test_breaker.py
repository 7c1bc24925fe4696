"""The egress circuit breaker's state machine, on a manual clock."""

from __future__ import annotations

import pytest

from portcullis.egress.breaker import BreakerConfig, BreakerState, CircuitBreaker, Permit, is_failure
from portcullis.errors import CircuitOpen
from portcullis.testing import ManualClock

Transition = tuple[str, BreakerState, BreakerState]


def make(config: BreakerConfig | None = None) -> tuple[CircuitBreaker, ManualClock, list[Transition]]:
    clock = ManualClock()
    seen: list[Transition] = []
    cfg = config or BreakerConfig(failure_rate=0.5, min_calls=4, window_s=60, open_s=30, half_open_probes=2)
    return CircuitBreaker("github", cfg, clock, lambda *t: seen.append(t)), clock, seen


def call(b: CircuitBreaker, *, failed: bool, duration_s: float = 0.05) -> None:
    b.record(b.acquire(), failed=failed, duration_s=duration_s)


@pytest.mark.parametrize(("status", "error", "expected"), [
    (200, False, False), (201, False, False), (304, False, False), (400, False, False), (401, False, False),
    (404, False, False), (422, False, False), (429, False, True), (500, False, True), (502, False, True),
    (503, False, True), (None, True, True), (None, False, True),
])
def test_what_counts_as_a_failure(status: int | None, error: bool, expected: bool) -> None:
    assert is_failure(status, error=error) is expected


def test_it_opens_at_the_failure_rate_only_once_enough_calls_were_seen() -> None:
    b, _, seen = make()
    call(b, failed=True)
    call(b, failed=True)
    call(b, failed=True)  # 3/3 failed, but fewer than min_calls=4
    assert b.state is BreakerState.CLOSED
    call(b, failed=False)  # 3/4 = 75% >= 50%
    assert b.state is BreakerState.OPEN
    assert seen == [("github", BreakerState.CLOSED, BreakerState.OPEN)]


def test_a_healthy_endpoint_with_some_failures_stays_closed() -> None:
    b, _, _ = make()
    for i in range(100):
        call(b, failed=i % 3 == 2)  # every third call fails: about 33%
    assert b.state is BreakerState.CLOSED


def test_open_fails_fast_with_retry_after_then_half_opens_after_open_s() -> None:
    b, clock, _ = make()
    for _ in range(4):
        call(b, failed=True)
    with pytest.raises(CircuitOpen) as info:
        b.acquire()
    assert info.value.retry_after_s == 30
    clock.advance(29)
    with pytest.raises(CircuitOpen) as info:
        b.acquire()
    assert info.value.retry_after_s == pytest.approx(1)
    clock.advance(1)
    assert b.state is BreakerState.HALF_OPEN


def test_half_open_admits_only_its_probes_and_closes_when_all_succeed() -> None:
    b, clock, seen = make()
    for _ in range(4):
        call(b, failed=True)
    clock.advance(30)
    p1, p2 = b.acquire(), b.acquire()
    assert p1.probe and p2.probe
    with pytest.raises(CircuitOpen):
        b.acquire()  # a third concurrent call would be more than the configured probes
    b.record(p1, failed=False, duration_s=0.1)
    assert b.state is BreakerState.HALF_OPEN
    b.record(p2, failed=False, duration_s=0.1)
    assert b.state is BreakerState.CLOSED
    assert [t[2] for t in seen] == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_a_failed_probe_reopens_for_a_full_open_period() -> None:
    b, clock, _ = make()
    for _ in range(4):
        call(b, failed=True)
    clock.advance(30)
    b.record(b.acquire(), failed=True, duration_s=0.1)
    assert b.state is BreakerState.OPEN
    clock.advance(29)
    assert b.state is BreakerState.OPEN
    clock.advance(1)
    assert b.state is BreakerState.HALF_OPEN


def test_a_cancelled_probe_frees_its_slot() -> None:
    b, clock, _ = make(BreakerConfig(min_calls=1, open_s=5, half_open_probes=1))
    call(b, failed=True)
    clock.advance(5)
    probe = b.acquire()
    b.release(probe)
    assert b.acquire().probe


def test_slow_calls_open_it_when_configured() -> None:
    b, _, _ = make(BreakerConfig(failure_rate=1.0, slow_call_rate=0.5, slow_call_s=2.0, min_calls=4))
    for duration in (0.1, 3.0, 2.5, 0.1):
        call(b, failed=False, duration_s=duration)
    assert b.state is BreakerState.OPEN


def test_a_time_window_forgets_old_failures() -> None:
    b, clock, _ = make(BreakerConfig(failure_rate=0.5, min_calls=4, window_s=60))
    for _ in range(3):
        call(b, failed=True)
    clock.advance(61)
    call(b, failed=True)  # the three old failures are outside the window: 1 call < min_calls
    assert b.state is BreakerState.CLOSED


def test_a_count_window_keeps_the_last_n_calls() -> None:
    b, _, _ = make(BreakerConfig(failure_rate=0.5, min_calls=4, window_calls=4))
    for failed in (True, False, False, False, False, False):
        call(b, failed=failed)
    assert b.state is BreakerState.CLOSED  # never more than one failure in four
    call(b, failed=True)
    call(b, failed=True)
    assert b.state is BreakerState.OPEN  # the last four: two of four failed


def test_outcomes_from_before_a_transition_are_ignored() -> None:
    b, clock, _ = make()
    late = b.acquire()
    for _ in range(4):
        call(b, failed=True)
    clock.advance(30)
    probe = b.acquire()
    b.record(late, failed=False, duration_s=0.1)  # admitted while closed: says nothing now
    b.record(probe, failed=False, duration_s=0.1)
    assert b.state is BreakerState.HALF_OPEN  # still needs its second probe


def test_operators_can_force_either_way_and_reset() -> None:
    b, _, seen = make()
    b.force(BreakerState.FORCED_OPEN)
    with pytest.raises(CircuitOpen):
        b.acquire()
    b.force(BreakerState.FORCED_CLOSED)
    for _ in range(20):
        call(b, failed=True)
    assert b.state is BreakerState.FORCED_CLOSED  # a forced state does not learn
    b.reset()
    assert b.state is BreakerState.CLOSED
    assert [t[2] for t in seen] == [BreakerState.FORCED_OPEN, BreakerState.FORCED_CLOSED, BreakerState.CLOSED]
    with pytest.raises(ValueError, match="forced"):
        b.force(BreakerState.OPEN)


def test_a_permit_records_its_generation() -> None:
    b, _, _ = make()
    assert b.acquire() == Permit(probe=False, generation=0)


@pytest.mark.parametrize("bad", [
    {"failure_rate": 0}, {"failure_rate": 1.5}, {"min_calls": 0}, {"half_open_probes": 0},
    {"window_calls": 0, "window_s": 0}, {"window_calls": -1},
])
def test_nonsense_configs_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must|needs"):
        BreakerConfig(**bad)  # type: ignore[arg-type]


# --- sharing between instances: what is told (on_shared) and what is taken (adopt) ---------------

Shared = tuple[str, BreakerState, float]


def shared_log(b: CircuitBreaker) -> list[Shared]:
    told: list[Shared] = []
    b.on_shared = lambda *t: told.append(t)
    return told


def test_its_own_transitions_are_told_except_half_open() -> None:
    b, clock, _ = make()
    told = shared_log(b)
    for _ in range(4):
        call(b, failed=True)
    clock.advance(30)
    call(b, failed=False)  # probe 1 of 2 (half-open is not told)
    call(b, failed=False)  # probe 2: closed again
    b.force(BreakerState.FORCED_OPEN)
    b.reset()
    assert told == [("github", BreakerState.OPEN, 30.0), ("github", BreakerState.CLOSED, 0.0),
                    ("github", BreakerState.FORCED_OPEN, 0.0), ("github", BreakerState.CLOSED, 0.0)]


def test_an_adopted_open_keeps_the_senders_remaining_period_and_is_not_told_back() -> None:
    b, clock, seen = make()
    told = shared_log(b)
    b.adopt(BreakerState.OPEN, open_for_s=12.0)
    assert b.state is BreakerState.OPEN and told == []
    assert seen == [("github", BreakerState.CLOSED, BreakerState.OPEN)]  # still audited and counted here
    with pytest.raises(CircuitOpen) as info:
        b.acquire()
    assert info.value.retry_after_s == pytest.approx(12.0)
    clock.advance(12)
    assert b.state is BreakerState.HALF_OPEN  # probes after the sender's period, not a full 30 s


def test_an_adopted_close_ends_an_open_period_early() -> None:
    b, _, _ = make()
    for _ in range(4):
        call(b, failed=True)
    b.adopt(BreakerState.CLOSED)
    assert b.state is BreakerState.CLOSED
    b.acquire()


def test_a_forced_state_here_ignores_learned_states_but_follows_another_operator() -> None:
    b, _, _ = make()
    b.force(BreakerState.FORCED_CLOSED)
    b.adopt(BreakerState.OPEN, open_for_s=30.0)
    assert b.state is BreakerState.FORCED_CLOSED
    b.adopt(BreakerState.FORCED_OPEN)
    assert b.state is BreakerState.FORCED_OPEN
    b.adopt(BreakerState.CLOSED)  # another operator's reset
    assert b.state is BreakerState.CLOSED


def test_adopting_a_later_open_extends_the_period_and_half_open_is_never_adopted() -> None:
    b, clock, _ = make()
    b.adopt(BreakerState.OPEN, open_for_s=5.0)
    b.adopt(BreakerState.OPEN, open_for_s=20.0)
    assert b.retry_after_s() == pytest.approx(20.0)
    b.adopt(BreakerState.HALF_OPEN)
    assert b.state is BreakerState.OPEN
    clock.advance(20)
    assert b.state is BreakerState.HALF_OPEN


def _reference_opens(window: list[tuple[float, bool, bool]], cfg: BreakerConfig) -> bool:
    """The rule written out: rates over every call still in the window."""
    if len(window) < cfg.min_calls:
        return False
    failures = sum(1 for _, f, _ in window if f)
    slows = sum(1 for _, _, s in window if s)
    return failures / len(window) >= cfg.failure_rate or slows / len(window) >= cfg.slow_call_rate


@pytest.mark.parametrize("window_calls", [0, 7])
@pytest.mark.parametrize("seed", range(20))
def test_the_running_counts_decide_as_a_recount_of_the_window_would(seed: int, window_calls: int) -> None:
    # The breaker keeps failure and slow counts as calls enter and leave the window (O(1) per
    # outcome); a long random run must open exactly when a recount over the window would.
    import random

    rng = random.Random(seed)
    cfg = BreakerConfig(failure_rate=0.4, slow_call_rate=0.5, slow_call_s=1.0, min_calls=5, window_s=10.0,
                        window_calls=window_calls, open_s=5.0, half_open_probes=1)
    b, clock, _ = make(cfg)
    window: list[tuple[float, bool, bool]] = []
    opened = 0
    for _ in range(400):
        clock.advance(rng.choice((0.0, 0.5, 2.0)))
        if b.state is not BreakerState.CLOSED:
            clock.advance(cfg.open_s)
            call(b, failed=False)  # the one probe closes it again, on an empty window
            window.clear()
            continue
        failed, duration = rng.random() < 0.3, rng.choice((0.1, 0.1, 2.0))
        window.append((clock.monotonic(), failed, duration >= cfg.slow_call_s))
        if window_calls:
            window = window[-window_calls:]
        else:
            # a time-based window keeps each call with its bucket (window_s / 100 wide) until the
            # whole bucket has left the window
            width = cfg.window_s / 100
            window = [c for c in window if int(c[0] // width) > (clock.monotonic() - cfg.window_s) / width - 1]
        expected = _reference_opens(window, cfg)
        call(b, failed=failed, duration_s=duration)
        assert (b.state is BreakerState.OPEN) is expected
        opened += expected
    assert opened > 3  # the run went through the interesting transitions


def test_a_time_based_window_holds_a_bounded_number_of_entries_whatever_the_call_rate() -> None:
    b, clock, _ = make(BreakerConfig(failure_rate=0.9, min_calls=4, window_s=60))
    for _ in range(50_000):  # about 830 calls a second for a minute, then some
        call(b, failed=False)
        clock.advance(0.0012)
    assert len(b._window) <= 101 and b._total > 49_000


def test_a_call_leaves_a_time_based_window_at_most_one_bucket_late() -> None:
    b, clock, _ = make(BreakerConfig(failure_rate=0.5, min_calls=2, window_s=60))
    call(b, failed=True)
    clock.advance(60.6)  # the window plus its bucket (0.6 s): the failure is gone
    call(b, failed=True)
    assert b.state is BreakerState.CLOSED  # one failed call in the window: below min_calls
