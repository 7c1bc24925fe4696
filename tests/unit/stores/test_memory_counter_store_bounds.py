"""MemoryCounterStore stays small under a flood of distinct clients, and its hard cap holds.

Per-IP limits make one entry per address, and an attacker chooses how many addresses it shows.
Idle entries must expire (a "10/second" GCRA entry is idle 0.1 s after its request) and
``max_entries`` must bound the rest. Assertions are on entry counts, never on elapsed time.
``apply_now`` is the synchronous body of ``apply``; calling it directly keeps the million-request
loop fast.
"""

from __future__ import annotations

import pytest

from portcullis.config.types import parse_rate
from portcullis.limiting.rules import LimitRule
from portcullis.stores.memory import MemoryCounterStore
from portcullis.testing import ManualClock

# at 1,000 new addresses a second, a 0.1 s idle time leaves about 100 live entries
SMALL = 1_000


@pytest.mark.slow
def test_a_million_distinct_ips_leave_only_recent_entries() -> None:
    clock = ManualClock()
    store = MemoryCounterStore()
    rule = LimitRule(name="per-ip", windows=[parse_rate("10/second")])
    checkpoints: list[int] = []
    for i in range(1_000_000):
        ip = f"10.{i >> 16}.{i >> 8 & 0xFF}.{i & 0xFF}"  # 1,000,000 distinct addresses
        assert store.apply_now([(rule, ip)], clock.monotonic(), 1, commit=True).allowed
        clock.advance(0.001)
        if i % 100_000 == 99_999:
            checkpoints.append(store.entry_count())
    assert len(checkpoints) == 10
    assert max(checkpoints) < SMALL, checkpoints
    assert store.entry_count() < SMALL


@pytest.mark.parametrize(
    "rate",
    ["10/day", "1/minute"],  # a sliding-window entry and a GCRA entry, neither idle before the test ends
    ids=["sliding-day", "gcra-minute"],
)
def test_the_hard_cap_holds_when_nothing_expires(rate: str) -> None:
    clock = ManualClock()
    store = MemoryCounterStore(max_entries=1000)
    rule = LimitRule(name="per-ip", windows=[parse_rate(rate)])
    for i in range(5000):
        assert store.apply_now([(rule, f"client-{i}")], clock.monotonic(), 1, commit=True).allowed
        clock.advance(0.001)
        assert store.entry_count() <= 1000
    assert store.entry_count() == 1000
